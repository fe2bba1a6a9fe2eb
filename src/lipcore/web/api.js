// The REST side of the server (docs/protocol.md "Connecting", DESIGN.md "Contracts").

// A server started with an API key wants it on every REST call (asset files excepted). The page
// takes it once from ?key=… and keeps it in this tab's sessionStorage, out of the address bar.
const KEY_NAME = "lipcore.api_key";
const urlKey = new URLSearchParams(location.search).get("key");
if (urlKey) {
  sessionStorage.setItem(KEY_NAME, urlKey);
  const clean = new URL(location.href);
  clean.searchParams.delete("key");
  history.replaceState(null, "", clean);
}

function fetch(url, init = {}) {
  const key = sessionStorage.getItem(KEY_NAME);
  const headers = new Headers(init.headers ?? {});
  if (key) headers.set("X-API-Key", key);
  return window.fetch(url, { ...init, headers });
}

async function json(res, what) {
  if (!res.ok) {
    let detail = "";
    try {
      const body = await res.json();
      detail = body.detail?.message ?? body.detail ?? body.message ?? JSON.stringify(body);
      if (typeof detail !== "string") detail = JSON.stringify(detail);
    } catch {
      detail = res.statusText;
    }
    throw new Error(`${what} failed (HTTP ${res.status}): ${detail}`);
  }
  return res.json();
}

/** The avatars the server has: [{avatar_id, idle_url, lipsync_assets, preview_url?}]. */
export async function listAvatars() {
  const res = await fetch("/avatars");
  if (res.status === 404) return [];
  const body = await json(res, "listing avatars");
  return Array.isArray(body) ? body : (body.avatars ?? []);
}

/** One avatar's AvatarizeResponse {avatar_id, idle_url, lipsync_assets}. */
export async function getAvatar(avatarId) {
  return json(await fetch(`/avatars/${encodeURIComponent(avatarId)}`), `loading avatar ${avatarId}`);
}

/** The voices of the server's TTS source: [{id, name, language}]. */
export async function listVoices() {
  const res = await fetch("/voices");
  if (!res.ok) return [];
  const body = await res.json();
  return Array.isArray(body) ? body : (body.voices ?? []);
}

/** Upload a photo: POST /avatarize-2d (multipart hero_image) → AvatarizeResponse. */
export async function avatarize(file, backend = null) {
  const form = new FormData();
  form.append("hero_image", file);
  if (backend) form.append("backend", backend);
  return json(await fetch("/avatarize-2d", { method: "POST", body: form }), "avatarize");
}

/** POST /session-2d → {session_id, ws_url}; ws_url made absolute for this page. */
export async function createSession(avatarId, voiceId) {
  const body = { avatar_id: avatarId, voice_id: voiceId };
  const res = await fetch("/session-2d", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const s = await json(res, "creating a session");
  const url = new URL(s.ws_url, location.href);
  if (url.protocol === "http:") url.protocol = "ws:";
  if (url.protocol === "https:") url.protocol = "wss:";
  return { ...s, ws_url: url.href };
}
