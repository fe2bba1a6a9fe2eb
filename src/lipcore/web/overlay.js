// Layer 1, the mouth overlay: sprites (atlas cross-fade on a 2D canvas) and mesh (WebGL warp
// of the ROI over the interior layer). Both are placed by the mouth track's affine of the idle
// frame on screen: photo px → idle frame px → canvas px.

import { blendMeshOffsets, REST, topCells } from "./protocol.js";

/** object-fit: contain of a `vw`×`vh` video in a `cw`×`ch` canvas → {s, ox, oy}. */
export function containFit(vw, vh, cw, ch) {
  const s = Math.min(cw / vw, ch / vh);
  return { s, ox: (cw - vw * s) / 2, oy: (ch - vh * s) / 2 };
}

/** photo px → canvas px as a 2D-canvas transform (a, b, c, d, e, f in canvas order). */
export function canvasTransform(affine, fit) {
  const [a, b, c, d, e, f] = affine;
  const { s, ox, oy } = fit;
  return [s * a, s * d, s * b, s * e, s * c + ox, s * f + oy];
}

export function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.crossOrigin = "anonymous";
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`could not load image ${url}`));
    img.src = url;
  });
}

/** A grayscale mask image → a canvas whose alpha is the mask (for destination-in). */
export function maskToAlpha(img, w, h) {
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  const g = c.getContext("2d", { willReadFrequently: true });
  g.drawImage(img, 0, 0, w, h);
  const data = g.getImageData(0, 0, w, h);
  const px = data.data;
  for (let i = 0; i < px.length; i += 4) {
    // A mask saved with alpha uses its alpha; a grayscale one its luminance.
    const a = px[i + 3] < 255 ? px[i + 3] : px[i];
    px[i] = 255;
    px[i + 1] = 255;
    px[i + 2] = 255;
    px[i + 3] = a;
  }
  g.putImageData(data, 0, 0);
  return c;
}

/** Does the image carry real transparency (any pixel with alpha < 250 on a sparse grid)? */
function hasAlpha(img) {
  const c = document.createElement("canvas");
  c.width = Math.min(img.width, 256);
  c.height = Math.min(img.height, 256);
  const g = c.getContext("2d", { willReadFrequently: true });
  g.drawImage(img, 0, 0, c.width, c.height);
  const px = g.getImageData(0, 0, c.width, c.height).data;
  for (let i = 3; i < px.length; i += 4 * 7) if (px[i] < 250) return true;
  return false;
}

/**
 * The mouth image composed in `off` (ROI-sized, photo px): cut by `mask` (an alpha canvas, or
 * null), then drawn alone on the overlay context `g` at (`x`, `y`) in photo px, placed by the
 * mouth track's `affine` in a canvas fitted by `fit`.
 */
function placeMasked(g, off, mask, affine, fit, x, y) {
  const og = off.getContext("2d");
  if (mask) {
    og.globalCompositeOperation = "destination-in";
    og.drawImage(mask, 0, 0);
  }
  og.globalCompositeOperation = "source-over";
  g.setTransform(1, 0, 0, 1, 0, 0);
  g.clearRect(0, 0, g.canvas.width, g.canvas.height);
  g.setTransform(...canvasTransform(affine, fit));
  g.imageSmoothingQuality = "high";
  g.drawImage(off, x, y);
  g.setTransform(1, 0, 0, 1, 0, 0);
}

function relative(base, name) {
  return new URL(name, new URL(base, location.href)).href;
}

// ------------------------------------------------------------------------- sprites

export class SpriteOverlay {
  /**
   * Load variant A: `atlasJsonUrl` (atlas.json: grid, classes, roi, mask, optional cells and
   * image). The atlas image is `image` from the JSON, else `atlas_png_url`, else atlas.png next
   * to the JSON.
   */
  static async load(canvas, { atlasJsonUrl, atlasPngUrl = null, maskUrl = null }) {
    const res = await fetch(atlasJsonUrl);
    if (!res.ok) throw new Error(`atlas.json: HTTP ${res.status} at ${atlasJsonUrl}`);
    const atlas = await res.json();
    const imgUrl = atlas.image ? relative(atlasJsonUrl, atlas.image)
      : atlasPngUrl ?? relative(atlasJsonUrl, "atlas.png");
    const mUrl = maskUrl ?? (atlas.mask ? relative(atlasJsonUrl, atlas.mask) : null);
    const [img, mask] = await Promise.all([loadImage(imgUrl), mUrl ? loadImage(mUrl) : null]);
    return new SpriteOverlay(canvas, atlas, img, mask);
  }

  constructor(canvas, atlas, img, maskImg) {
    this.kind = "sprites";
    this.canvas = canvas;
    this.g = canvas.getContext("2d");
    this.atlas = atlas;
    this.img = img;
    this.roi = atlas.roi;
    this.classes = atlas.classes;
    const { cols, rows } = atlas.grid;
    this.cellW = img.width / cols;
    this.cellH = img.height / rows;
    this.off = document.createElement("canvas");
    this.off.width = this.roi.w;
    this.off.height = this.roi.h;
    this.og = this.off.getContext("2d");
    // Cells rendered with their feathered alpha need no second mask; opaque cells get the mask.
    this.mask = maskImg && !hasAlpha(img) ? maskToAlpha(maskImg, this.roi.w, this.roi.h) : null;
  }

  cellRect(cls) {
    const cell = this.atlas.cells?.[cls];
    if (cell) return [cell.x, cell.y, cell.w, cell.h];
    const i = Math.max(0, this.classes.indexOf(cls));
    const cols = this.atlas.grid.cols;
    return [(i % cols) * this.cellW, Math.floor(i / cols) * this.cellH, this.cellW, this.cellH];
  }

  /** Draw the mouth for `weights`, placed by `affine` in a canvas fitted by `fit`. */
  draw(affine, weights, fit) {
    const { og, off, roi } = this;
    og.globalCompositeOperation = "copy";
    og.globalAlpha = 1;
    og.clearRect(0, 0, off.width, off.height);
    // Canvas 2D keeps premultiplied pixels; "lighter" adds them, so the cells cross-fade as
    // Σ w·(premultiplied cell) with no dark fringes at feathered edges.
    og.globalCompositeOperation = "lighter";
    for (const { cls, w } of topCells(weights, 3, this.classes)) {
      const [sx, sy, sw, sh] = this.cellRect(cls);
      og.globalAlpha = w;
      og.drawImage(this.img, sx, sy, sw, sh, 0, 0, roi.w, roi.h);
    }
    og.globalAlpha = 1;
    placeMasked(this.g, off, this.mask, affine, fit, roi.x, roi.y);
  }
}

// ------------------------------------------------------------------------- patches (variant C)

export class PatchOverlay {
  /**
   * Variant C: the server renders each video frame's mouth (Wav2Lip) and streams it as a patch
   * the size of the ROI (photo px). Drawn like a sprite cell: through the mouth mask, placed by
   * the mouth track's affine of the idle frame on screen. No patch: the idle loop's own mouth.
   */
  static async load(canvas, { roi, maskUrl = null }) {
    const mask = maskUrl ? await loadImage(maskUrl) : null;
    return new PatchOverlay(canvas, roi, mask);
  }

  constructor(canvas, roi, maskImg) {
    this.kind = "onnx";
    this.canvas = canvas;
    this.g = canvas.getContext("2d");
    this.roi = roi;
    this.off = document.createElement("canvas");
    this.off.width = roi.w;
    this.off.height = roi.h;
    this.og = this.off.getContext("2d");
    this.mask = maskImg ? maskToAlpha(maskImg, roi.w, roi.h) : null;
  }

  /** Draw `patch` ({bitmap, x, y, w, h}, or null for the idle mouth) placed by `affine`. */
  draw(affine, _weights, fit, patch = null) {
    if (!patch) {
      this.g.setTransform(1, 0, 0, 1, 0, 0);
      this.g.clearRect(0, 0, this.canvas.width, this.canvas.height);
      return;
    }
    const { og, off } = this;
    if (off.width !== patch.w || off.height !== patch.h) {
      // The server's box is the avatar's ROI; follow it should the two ever differ.
      off.width = patch.w;
      off.height = patch.h;
      if (this.mask) this.mask = null;
    }
    og.globalCompositeOperation = "copy";
    og.drawImage(patch.bitmap, 0, 0, patch.w, patch.h);
    placeMasked(this.g, off, this.mask, affine, fit, patch.x, patch.y);
  }
}

// ------------------------------------------------------------------------- mesh (WebGL)

const VERT = `
attribute vec2 a_pos;   // photo px
attribute vec2 a_uv;    // texture coordinate in [0, 1]
uniform mat3 u_photoToClip;
varying vec2 v_uv;
void main() {
  vec3 p = u_photoToClip * vec3(a_pos, 1.0);
  gl_Position = vec4(p.xy, 0.0, 1.0);
  v_uv = a_uv;
}`;

const FRAG = `
precision mediump float;
uniform sampler2D u_tex;
uniform float u_alpha;
varying vec2 v_uv;
void main() {
  gl_FragColor = texture2D(u_tex, v_uv) * u_alpha;  // premultiplied on upload
}`;

function compile(gl, type, src) {
  const sh = gl.createShader(type);
  gl.shaderSource(sh, src);
  gl.compileShader(sh);
  if (!gl.getShaderParameter(sh, gl.COMPILE_STATUS)) {
    throw new Error(`shader: ${gl.getShaderInfoLog(sh)}`);
  }
  return sh;
}

function texture(gl, img) {
  const t = gl.createTexture();
  gl.bindTexture(gl.TEXTURE_2D, t);
  gl.pixelStorei(gl.UNPACK_PREMULTIPLY_ALPHA_WEBGL, true);
  gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, gl.RGBA, gl.UNSIGNED_BYTE, img);
  gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
  gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
  gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
  gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
  return t;
}

/** The inner-lip polygon for `weights`: the classes' polygons blended by weight (Rest the rest). */
export function blendOpening(openings, weights) {
  const restPoly = openings[REST];
  if (!restPoly) return null;
  let sum = 0;
  for (const [c, w] of Object.entries(weights)) if (c !== REST && openings[c]) sum += w;
  const scale = sum > 1 ? 1 / sum : 1;
  const rw = Math.max(0, 1 - sum * scale);
  const out = restPoly.map(([x, y]) => [x * rw, y * rw]);
  for (const [c, w] of Object.entries(weights)) {
    const poly = openings[c];
    if (c === REST || !poly || !(w > 0)) continue;
    for (let i = 0; i < out.length; i++) {
      out[i][0] += w * scale * poly[i][0];
      out[i][1] += w * scale * poly[i][1];
    }
  }
  return out;
}

/** Shoelace area of a polygon [[x, y], ...]. */
export function polygonArea(poly) {
  let a = 0;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    a += poly[j][0] * poly[i][1] - poly[i][0] * poly[j][1];
  }
  return Math.abs(a) / 2;
}

export class MeshOverlay {
  /**
   * Load variant B: meshdef.json (grid, roi, forward `targets`, `openings`) and its layers,
   * named in the JSON: `texture` (the photo's ROI with its mouth closed by lip, alpha = mask)
   * and `interior` (cavity, teeth, tongue), shown inside the blended inner-lip opening.
   */
  static async load(canvas, { meshdefUrl }) {
    const res = await fetch(meshdefUrl);
    if (!res.ok) throw new Error(`meshdef.json: HTTP ${res.status} at ${meshdefUrl}`);
    const def = await res.json();
    if (def.warp && def.warp !== "forward") {
      throw new Error(`meshdef.json: warp "${def.warp}" is not supported (forward offsets only)`);
    }
    const texUrl = relative(meshdefUrl, def.texture ?? "mesh_texture.png");
    const intUrl = relative(meshdefUrl, def.interior ?? "interior.png");
    const [tex, interior] = await Promise.all([loadImage(texUrl), loadImage(intUrl)]);
    return new MeshOverlay(canvas, def, tex, interior);
  }

  constructor(canvas, def, texImg, interiorImg) {
    this.kind = "mesh";
    this.canvas = canvas;
    this.def = def;
    this.roi = def.roi;
    const gl = canvas.getContext("webgl", { premultipliedAlpha: true, alpha: true,
      preserveDrawingBuffer: true, antialias: true });
    if (!gl) throw new Error("WebGL is not available in this browser: use a sprites avatar");
    this.gl = gl;
    const prog = gl.createProgram();
    gl.attachShader(prog, compile(gl, gl.VERTEX_SHADER, VERT));
    gl.attachShader(prog, compile(gl, gl.FRAGMENT_SHADER, FRAG));
    gl.linkProgram(prog);
    if (!gl.getProgramParameter(prog, gl.LINK_STATUS)) {
      throw new Error(`shader link: ${gl.getProgramInfoLog(prog)}`);
    }
    this.prog = prog;
    this.loc = {
      pos: gl.getAttribLocation(prog, "a_pos"),
      uv: gl.getAttribLocation(prog, "a_uv"),
      m: gl.getUniformLocation(prog, "u_photoToClip"),
      tex: gl.getUniformLocation(prog, "u_tex"),
      alpha: gl.getUniformLocation(prog, "u_alpha"),
    };
    this.tex = texture(gl, texImg);
    this.interior = texture(gl, interiorImg);
    this.buildGrid();
    this.fanPos = gl.createBuffer();
    this.fanUv = gl.createBuffer();
  }

  buildGrid() {
    const gl = this.gl;
    const { cols, rows } = this.def.grid;
    const { x, y, w, h } = this.roi;
    const n = cols * rows;
    this.restPos = new Float32Array(2 * n);
    const uv = new Float32Array(2 * n);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        const i = r * cols + c;
        uv[2 * i] = c / (cols - 1);
        uv[2 * i + 1] = r / (rows - 1);
        this.restPos[2 * i] = x + uv[2 * i] * w;
        this.restPos[2 * i + 1] = y + uv[2 * i + 1] * h;
      }
    }
    const idx = [];
    for (let r = 0; r < rows - 1; r++) {
      for (let c = 0; c < cols - 1; c++) {
        const i = r * cols + c;
        idx.push(i, i + 1, i + cols, i + 1, i + cols + 1, i + cols);
      }
    }
    this.count = idx.length;
    this.uvBuf = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, this.uvBuf);
    gl.bufferData(gl.ARRAY_BUFFER, uv, gl.STATIC_DRAW);
    this.posBuf = gl.createBuffer();
    this.idxBuf = gl.createBuffer();
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, this.idxBuf);
    gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, new Uint16Array(idx), gl.STATIC_DRAW);
    this.pos = new Float32Array(2 * n);
  }

  bind(posBuf, uvBuf, tex, alpha) {
    const gl = this.gl;
    const L = this.loc;
    gl.bindBuffer(gl.ARRAY_BUFFER, posBuf);
    gl.enableVertexAttribArray(L.pos);
    gl.vertexAttribPointer(L.pos, 2, gl.FLOAT, false, 0, 0);
    gl.bindBuffer(gl.ARRAY_BUFFER, uvBuf);
    gl.enableVertexAttribArray(L.uv);
    gl.vertexAttribPointer(L.uv, 2, gl.FLOAT, false, 0, 0);
    gl.activeTexture(gl.TEXTURE0);
    gl.bindTexture(gl.TEXTURE_2D, tex);
    gl.uniform1i(L.tex, 0);
    gl.uniform1f(L.alpha, alpha);
  }

  /** The interior inside the inner-lip opening, as a triangle fan around its centroid. */
  drawOpening(weights) {
    const openings = this.def.openings;
    if (!openings) return;
    const poly = blendOpening(openings, weights);
    if (!poly || poly.length < 3) return;
    const { x, y, w, h } = this.roi;
    const area = polygonArea(poly);
    if (area <= 1) return;
    // A barely parted mouth is a soft line, not a hard slit: coverage fades in with the area.
    const fade = Math.min(1, area / (0.02 * w * w * 0.25));
    const cx = poly.reduce((s, p) => s + p[0], 0) / poly.length;
    const cy = poly.reduce((s, p) => s + p[1], 0) / poly.length;
    const pts = [[cx, cy], ...poly, poly[0]];
    const pos = new Float32Array(2 * pts.length);
    const uv = new Float32Array(2 * pts.length);
    pts.forEach(([px, py], i) => {
      pos[2 * i] = x + px;
      pos[2 * i + 1] = y + py;
      uv[2 * i] = px / w;
      uv[2 * i + 1] = py / h;
    });
    const gl = this.gl;
    gl.bindBuffer(gl.ARRAY_BUFFER, this.fanPos);
    gl.bufferData(gl.ARRAY_BUFFER, pos, gl.DYNAMIC_DRAW);
    gl.bindBuffer(gl.ARRAY_BUFFER, this.fanUv);
    gl.bufferData(gl.ARRAY_BUFFER, uv, gl.DYNAMIC_DRAW);
    this.bind(this.fanPos, this.fanUv, this.interior, fade);
    gl.drawArrays(gl.TRIANGLE_FAN, 0, pts.length);
  }

  draw(affine, weights, fit) {
    const gl = this.gl;
    const W = this.canvas.width;
    const H = this.canvas.height;
    gl.viewport(0, 0, W, H);
    gl.clearColor(0, 0, 0, 0);
    gl.clear(gl.COLOR_BUFFER_BIT);
    gl.useProgram(this.prog);
    gl.enable(gl.BLEND);
    gl.blendFunc(gl.ONE, gl.ONE_MINUS_SRC_ALPHA); // premultiplied "over"
    // photo px → canvas px (affine, then fit) → clip space, as a column-major mat3.
    const [a, b, c, d, e, f] = canvasTransform(affine, fit);
    const sx = 2 / W;
    const sy = -2 / H;
    gl.uniformMatrix3fv(this.loc.m, false, new Float32Array([
      a * sx, b * sy, 0,
      c * sx, d * sy, 0,
      e * sx - 1, f * sy + 1, 1,
    ]));
    // Forward offsets: the texture point under a control point at rest is drawn at
    // rest + offset, which is what a vertex mesh does.
    const off = blendMeshOffsets(this.def, weights);
    for (let i = 0; i < this.pos.length; i++) this.pos[i] = this.restPos[i] + off[i];
    gl.bindBuffer(gl.ARRAY_BUFFER, this.posBuf);
    gl.bufferData(gl.ARRAY_BUFFER, this.pos, gl.DYNAMIC_DRAW);
    this.bind(this.posBuf, this.uvBuf, this.tex, 1);
    gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, this.idxBuf);
    gl.drawElements(gl.TRIANGLES, this.count, gl.UNSIGNED_SHORT, 0);
    this.drawOpening(weights);
  }
}
