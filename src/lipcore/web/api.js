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

// Paths are relative: the page is served at the server's root, which may be a mount prefix
// inside a host application (create_app mounted at /avatar → /avatar/session-2d).
const KNOWN = "lipcore.avatars";

/** Avatar ids this browser created or opened before (the server has no public list). */
export function rememberedAvatars() {
  try {
    return JSON.parse(localStorage.getItem(KNOWN) ?? "[]");
  } catch {
    return [];
  }
}

export function rememberAvatar(avatarId) {
  const ids = [avatarId, ...rememberedAvatars().filter((x) => x !== avatarId)].slice(0, 20);
  localStorage.setItem(KNOWN, JSON.stringify(ids));
}

/** The avatars to offer: the server's list if it has one, else those remembered here. */
export async function listAvatars() {
  const res = await fetch("avatars");
  if (res.ok) {
    const body = await res.json();
    const list = Array.isArray(body) ? body : (body.avatars ?? []);
    if (list.length) return list;
  }
  return rememberedAvatars().map((id) => ({ avatar_id: id }));
}

/** One avatar's AvatarizeResponse {avatar_id, idle_url, lipsync_assets}. */
export async function getAvatar(avatarId) {
  const av = await json(await fetch(`avatars/${encodeURIComponent(avatarId)}`),
    `loading avatar ${avatarId}`);
  rememberAvatar(av.avatar_id);
  return av;
}

/** Voices of the offline engine, used when the server does not list its own. */
export const FALLBACK_VOICES = [
  { id: "en-us", name: "English (US)", language: "en-us" },
  { id: "en-gb", name: "English (UK)", language: "en-gb" },
  { id: "de", name: "Deutsch", language: "de" },
  { id: "fr", name: "Français", language: "fr" },
  { id: "es", name: "Español", language: "es" },
  { id: "it", name: "Italiano", language: "it" },
];

/** The voices of the server's TTS source: [{id, name, language}]. */
export async function listVoices() {
  const res = await fetch("voices");
  if (!res.ok) return FALLBACK_VOICES;
  const body = await res.json();
  const list = Array.isArray(body) ? body : (body.voices ?? []);
  return list.length ? list : FALLBACK_VOICES;
}

/** Upload a photo: POST /avatarize-2d (multipart hero_image, backend, name) → AvatarizeResponse. */
export async function avatarize(file, backend = null, name = null) {
  const form = new FormData();
  form.append("hero_image", file);
  if (backend) form.append("backend", backend);
  if (name) form.append("name", name);
  const av = await json(await fetch("avatarize-2d", { method: "POST", body: form }),
    "avatarize");
  rememberAvatar(av.avatar_id);
  return av;
}

/** POST /session-2d → {session_id, ws_url}; ws_url made absolute for this page. */
export async function createSession(avatarId, voiceId) {
  const body = { avatar_id: avatarId, voice_id: voiceId };
  const res = await fetch("session-2d", {
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

/** DELETE /session-2d/{id}: end a session the page no longer uses (a voice or avatar change). */
export async function deleteSession(sessionId) {
  const res = await fetch(`session-2d/${encodeURIComponent(sessionId)}`, { method: "DELETE" });
  if (!res.ok && res.status !== 404) await json(res, "closing the session");
}

/**
 * GET /backends → {backends: [{type, available, reason}], default}: the lip-sync back ends this
 * server can run. null when the server does not say (an older server): offer them all then.
 */
export async function listBackends() {
  const res = await fetch("backends");
  if (!res.ok) return null;
  return res.json();
}
