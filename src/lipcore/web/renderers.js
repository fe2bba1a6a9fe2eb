// The mouth renderers, one per avatar kind (lipsync_assets.type). The three shipped back ends
// are built in; any other kind is drawn by the web renderer module its back end ships (the
// server sends its URL as lipsync_assets.renderer_url and serves it from the plugin), the way
// datasette plugins extend their pages. A kind with no renderer here plays the idle loop alone
// with a visible notice; the page never breaks on it.
//
// A renderer module's default export: { label, canvas: "2d" | "webgl",
//   async load(canvas, assets, helpers) → overlay }, where the overlay has `kind`, `canvas`,
// `roi` ({x, y, w, h} in photo px) and draw(affine, weights, fit, patch). `helpers` hands the
// module the page's own placement code (docs/plugins.md, "The web renderer").

import {
  canvasTransform, containFit, loadImage, maskToAlpha, MeshOverlay, PatchOverlay, SpriteOverlay,
} from "./overlay.js";

const absolute = (url) => new URL(url, location.href).href;

/** What a renderer module may use of the page. */
export const helpers = Object.freeze({ absolute, canvasTransform, containFit, loadImage,
  maskToAlpha });

const BUILTIN = {
  sprites: {
    label: "Sprites",
    canvas: "2d",
    load: (canvas, a) => SpriteOverlay.load(canvas, { atlasJsonUrl: absolute(a.atlas_url),
      maskUrl: a.mask_url ? absolute(a.mask_url) : null }),
  },
  mesh: {
    label: "Mesh warp",
    canvas: "webgl",
    load: (canvas, a) => MeshOverlay.load(canvas, { meshdefUrl: absolute(a.meshdef_url) }),
  },
  onnx: {
    label: "Wav2Lip (server-rendered)",
    canvas: "2d",
    // Variant C: the server renders the mouth; this page places its patches.
    load: (canvas, a) => PatchOverlay.load(canvas, { roi: a.roi,
      maskUrl: a.mask_url ? absolute(a.mask_url) : null }),
  },
};

const registry = new Map(Object.entries(BUILTIN));
const imported = new Map(); // renderer_url → Promise<renderer>

/** Register a renderer for `kind` (a host page may add its own). */
export function registerRenderer(kind, renderer) {
  checkRenderer(kind, renderer);
  registry.set(kind, renderer);
}

function checkRenderer(kind, r) {
  if (!r || typeof r.load !== "function" || !["2d", "webgl"].includes(r.canvas)) {
    throw new Error(`the web renderer for "${kind}" is not a lipcore renderer module `
      + '(its default export needs load() and canvas "2d" or "webgl")');
  }
}

/**
 * The renderer for an avatar's lipsync assets, or null when this page has none for its kind
 * (`reason` then says why). A plugin's module is imported once per URL.
 */
export async function rendererFor(assets) {
  const kind = assets?.type ?? "";
  if (registry.has(kind)) return { renderer: registry.get(kind), reason: null };
  if (!assets?.renderer_url) {
    return { renderer: null,
      reason: `this page has no renderer for lip-sync kind "${kind}"` };
  }
  const url = absolute(assets.renderer_url);
  if (!imported.has(url)) {
    imported.set(url, import(url).then((m) => {
      checkRenderer(kind, m.default);
      return m.default;
    }));
  }
  try {
    return { renderer: await imported.get(url), reason: null };
  } catch (e) {
    imported.delete(url); // a later try may work (the server came back)
    return { renderer: null,
      reason: `the renderer of lip-sync kind "${kind}" did not load (${e.message ?? e})` };
  }
}

/** Show (or with null, hide) the notice over the stage that the mouth is not drawn. */
export function showNotice(stage, text) {
  let el = stage.querySelector(".kind-notice");
  if (!text) {
    el?.remove();
    return;
  }
  if (!el) {
    el = document.createElement("div");
    el.className = "kind-notice";
    el.setAttribute("role", "status");
    Object.assign(el.style, { position: "absolute", left: "8px", right: "8px", bottom: "8px",
      padding: "6px 10px", borderRadius: "6px", background: "rgba(20, 20, 20, 0.75)",
      color: "#fff", font: "13px system-ui, sans-serif", zIndex: "5" });
    stage.append(el);
  }
  el.textContent = text;
}
