// The REST side of the server (docs/protocol.md "Connecting", DESIGN.md "Contracts").

// Auth (docs/server.md, "Client tokens"): the page never holds the server's API key. A server
// with a key wants a short-lived client token, minted by the host application with the key
// (POST /tokens) for one avatar or one session. The page takes it once from ?token=… in its URL
// (or from the embedding app through setToken) and keeps it in this tab's sessionStorage, out of
// the address bar, the history and the Referer.
const TOKEN_NAME = "lipcore.client_token";

function takeFromUrl() {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  if (!params.has("token") && !params.has("key")) return;
  if (token) sessionStorage.setItem(TOKEN_NAME, token);
  if (params.has("key")) {
    // The master key never belongs in a browser: it is dropped unused.
    console.warn("lipcore: ?key= is ignored; open the page with a client token (?token=…) "
      + "minted by your application (POST /tokens)");
  }
  const clean = new URL(location.href);
  clean.searchParams.delete("token");
  clean.searchParams.delete("key");
  history.replaceState(null, "", clean);
}
takeFromUrl();
sessionStorage.removeItem("lipcore.api_key"); // what older versions of this page stored

/** Use `token` (a client token from POST /tokens) for the calls this page makes. */
export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_NAME, token);
  else sessionStorage.removeItem(TOKEN_NAME);
}

/** The client token this page holds, or null. */
export function currentToken() {
  return sessionStorage.getItem(TOKEN_NAME);
}

function fetch(url, init = {}) {
  const token = currentToken();
  const headers = new Headers(init.headers ?? {});
  if (token) headers.set("Authorization", `Bearer ${token}`);
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
