// The lipcore web client: layer 0 the idle loop <video>, layer 1 the mouth overlay <canvas>,
// driven by the live session on the audio clock. `window.lipcore` exposes the state tests and
// the benchmark measure (tests/clients, benchmarks/bench_browser.py).

import * as api from "./api.js";
import { AudioOut } from "./audio.js";
import { containFit, MeshOverlay, PatchOverlay, SpriteOverlay } from "./overlay.js";
import { activity, affineAt, frameIndexAt } from "./protocol.js";
import { LiveSession } from "./session.js";

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const MOVE_THRESHOLD = 0.05; // activity (Σ non-Rest weights) that counts as "the mouth moves"
const FRAME_LOG_MAX = 20000;

// ------------------------------------------------------------------------- test hook / state

const state = {
  ready: false,
  avatar: null,
  backend: null,
  lastWeights: {},
  lastActivity: 0,
  audioClockMs: null, // pts (ms) on the heard utterance's timeline, at the last drawn frame
  utterance: null,
  frameIndex: 0,
  frameTimeMs: [], // CPU time of each overlay draw
  frames: [], // {t: display time, pts, act, predErr} per drawn frame while speaking
  audio: [], // {t: heard time, rms} per frame while audio plays
  events: [],
  speakAt: null,
  firstAudioMs: null, // speak → first audio at the speaker
  firstMouthMs: null, // speak → first drawn frame with the mouth moving
  clockOffsetsMs: [], // per frame: pts drawn − pts heard when the frame shows (+ = mouth early)
  patchesShown: 0, // variant C: distinct server-rendered mouth patches drawn so far
  lastPatchSeq: null,
  error: null,
};

function log(type, fields = {}) {
  const ev = { t: performance.now(), type, ...fields };
  state.events.push(ev);
  if (state.events.length > 2000) state.events.shift();
  if (type === "first_audio" && state.speakAt !== null && state.firstAudioMs === null) {
    state.firstAudioMs = ev.t + ev.heard_in_ms - state.speakAt;
    ui.stat("first-audio", state.firstAudioMs);
  }
  if (type === "pong") ui.stat("rtt", fields.rtt_ms);
  if (type === "error" || type === "protocol_error") ui.toast(fields.message ?? type, true);
  if (type === "utterance_start") {
    ui.caption(fields.text ?? "");
    const oneWay = fields.server_to_page_ms;
    if (oneWay !== null) {
      // The clock sync is good to about half a round trip: below that, say so.
      const within = (session?.clock.rttMs ?? 0) / 2;
      const el = document.getElementById("stat-net");
      if (oneWay < within) el.textContent = `≤ ${Math.max(1, within).toFixed(0)} ms`;
      else ui.stat("net", oneWay, 1);
    }
  }
  if (type === "closed") ui.status(`disconnected (${fields.code})`, "off");
  if (type === "recovering") ui.status("reconnecting…", "wait");
  if (type === "recovered") ui.status("live", "on");
}

/** Envelope lag (ms) between the drawn mouth and the heard audio: + means the mouth is early. */
function envelopeLagMs(maxLag = 200, step = 5) {
  const f = state.frames;
  const a = state.audio;
  if (f.length < 10 || a.length < 10) return null;
  const t0 = Math.max(f[0].t, a[0].t);
  const t1 = Math.min(f[f.length - 1].t, a[a.length - 1].t);
  if (t1 - t0 < 300) return null;
  const sample = (arr, key, t) => {
    // Nearest earlier sample (both series are sorted by t).
    let lo = 0;
    let hi = arr.length - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (arr[mid].t <= t) lo = mid;
      else hi = mid;
    }
    return arr[lo][key];
  };
  const grid = [];
  for (let t = t0; t <= t1; t += step) grid.push(t);
  const mouth = grid.map((t) => sample(f, "act", t));
  let best = { lag: 0, r: -Infinity };
  for (let lag = -maxLag; lag <= maxLag; lag += step) {
    const au = grid.map((t) => sample(a, "rms", t + lag));
    const n = grid.length;
    const ma = mouth.reduce((s, x) => s + x, 0) / n;
    const mb = au.reduce((s, x) => s + x, 0) / n;
    let num = 0;
    let da = 0;
    let db = 0;
    for (let i = 0; i < n; i++) {
      num += (mouth[i] - ma) * (au[i] - mb);
      da += (mouth[i] - ma) ** 2;
      db += (au[i] - mb) ** 2;
    }
    const r = num / Math.sqrt(da * db || 1);
    if (r > best.r) best = { lag, r };
  }
  return { lagMs: best.lag, r: best.r };
}

function resetMeasurements() {
  Object.assign(state, { frames: [], audio: [], frameTimeMs: [], clockOffsetsMs: [],
    speakAt: null, firstAudioMs: null, firstMouthMs: null });
}

/** The mouth ROI of the frame on screen, in page CSS pixels (for screenshots of the mouth). */
function mouthRegion() {
  if (!overlay || !mouthTrack || !video.videoWidth) return null;
  const { x, y, w, h } = overlay.roi;
  const fit = containFit(video.videoWidth, video.videoHeight, overlay.canvas.width,
    overlay.canvas.height);
  const [a, b, c, d, e, f] = affineAt(mouthTrack, state.frameIndex);
  const xs = [];
  const ys = [];
  for (const [px, py] of [[x, y], [x + w, y], [x, y + h], [x + w, y + h]]) {
    xs.push(fit.s * (a * px + b * py + c) + fit.ox);
    ys.push(fit.s * (d * px + e * py + f) + fit.oy);
  }
  const box = overlay.canvas.getBoundingClientRect();
  const k = box.width / overlay.canvas.width;
  return {
    x: box.left + Math.min(...xs) * k, y: box.top + Math.min(...ys) * k,
    w: (Math.max(...xs) - Math.min(...xs)) * k, h: (Math.max(...ys) - Math.min(...ys)) * k,
  };
}

/**
 * Hold the idle loop still at `seconds` (null: let it play again). Screenshots and measurements
 * of the mouth then compare like with like: the same idle frame, so only the overlay changes.
 * Resolves once the held frame is on screen and the overlay has been drawn on it.
 */
async function holdIdle(seconds) {
  if (seconds === null || seconds === undefined) {
    await video.play().catch(() => {});
    return;
  }
  video.pause();
  if (Math.abs(video.currentTime - seconds) > 1e-3) {
    await new Promise((resolve) => {
      video.addEventListener("seeked", resolve, { once: true });
      video.currentTime = seconds;
    });
  }
  // Two display frames: the seeked frame is composited and the overlay redrawn for it.
  for (let i = 0; i < 3; i++) await new Promise((r) => requestAnimationFrame(r));
  return frameIndexAt(video.currentTime, videoFps, mouthTrack?.affines.length ?? 1);
}

window.lipcore = {
  state,
  mouthRegion,
  holdIdle,
  speak: (text, bargeIn = false) => speak(text, bargeIn),
  stop: () => stop(),
  envelopeLagMs,
  resetMeasurements,
  session: () => session,
};

// ------------------------------------------------------------------------- UI helpers

const ui = {
  status(text, kind = "on") {
    const el = $("#status");
    el.textContent = text;
    el.dataset.kind = kind;
  },
  stat(id, ms, digits = 0) {
    const el = document.getElementById(`stat-${id}`);
    if (el) el.textContent = ms === null || ms === undefined ? "–" : `${ms.toFixed(digits)} ms`;
  },
  caption(text) {
    $("#caption").textContent = text;
    $("#caption").classList.toggle("show", Boolean(text));
  },
  toast(text, isError = false) {
    const el = $("#toast");
    el.textContent = text;
    el.dataset.kind = isError ? "error" : "info";
    el.classList.add("show");
    clearTimeout(ui.toastTimer);
    ui.toastTimer = setTimeout(() => el.classList.remove("show"), 5000);
  },
  busy(on, text = "") {
    $("#busy").classList.toggle("show", on);
    $("#busy-text").textContent = text;
  },
};

// ------------------------------------------------------------------------- avatar + session

/** The lip-sync types this page draws, as the page names them. */
const BACKEND_NAMES = Object.freeze({
  sprites: "Sprites", mesh: "Mesh warp", onnx: "Wav2Lip (server-rendered)",
});

const video = $("#idle");
const canvas2d = $("#overlay");
const canvasGl = $("#overlay-gl");
let overlay = null;
let mouthTrack = null;
let session = null;
let mediaTime = 0;
let videoFps = 25;

function absolute(url) {
  return new URL(url, location.href).href;
}

async function loadAvatar(av) {
  ui.busy(true, "Loading avatar…");
  try {
    session?.close();
    session = null;
    state.ready = false;
    const assets = av.lipsync_assets;
    if (!Object.hasOwn(BACKEND_NAMES, assets?.type ?? "")) {
      throw new Error(`avatar ${av.avatar_id}: lip-sync type "${assets?.type}" is not shown by `
        + "the web client (it draws sprites, mesh and onnx avatars)");
    }
    const trackUrl = assets.mouth_track_url
      ?? absolute(new URL("mouth_track.json", absolute(av.idle_url)).href);
    const res = await fetch(trackUrl);
    if (!res.ok) throw new Error(`mouth track: HTTP ${res.status} at ${trackUrl}`);
    mouthTrack = await res.json();
    videoFps = mouthTrack.fps;
    video.src = absolute(av.idle_url);
    await video.play().catch(() => {});
    await new Promise((resolve) => {
      if (video.readyState >= 2) resolve();
      else video.addEventListener("loadeddata", resolve, { once: true });
    });
    const useGl = assets.type === "mesh";
    canvas2d.hidden = useGl;
    canvasGl.hidden = !useGl;
    const maskUrl = assets.mask_url ? absolute(assets.mask_url) : null;
    if (useGl) {
      overlay = await MeshOverlay.load(canvasGl, { meshdefUrl: absolute(assets.meshdef_url) });
    } else if (assets.type === "onnx") {
      // Variant C: the server renders the mouth; this page places its patches.
      overlay = await PatchOverlay.load(canvas2d, { roi: assets.roi, maskUrl });
    } else {
      overlay = await SpriteOverlay.load(canvas2d, { atlasJsonUrl: absolute(assets.atlas_url),
        maskUrl });
    }
    state.avatar = av.avatar_id;
    state.backend = assets.type;
    $("#backend").textContent = BACKEND_NAMES[assets.type];
    resize();
    await connect(av.avatar_id);
  } catch (e) {
    state.error = String(e.message ?? e);
    ui.toast(state.error, true);
    ui.status("not connected", "off");
    throw e;
  } finally {
    ui.busy(false);
  }
}

async function connect(avatarId) {
  ui.status("connecting…", "wait");
  const voice = $("#voice").value || params.get("voice") || "en-us";
  const s = await api.createSession(avatarId, voice);
  // recreate: a lost session (its worker died or restarts) is made again behind the balancer.
  const recreate = async () => (await api.createSession(avatarId, voice)).ws_url;
  session = new LiveSession(s.ws_url, { audio: session?.audio ?? sharedAudio(), log, recreate });
  await session.connect();
  state.ready = true;
  ui.status("live", "on");
}

let audioOut = null;
let analyser = null;
let analyserBuf = null;
function sharedAudio() {
  if (!audioOut) {
    // One AudioContext for the page; the analyser taps what goes to the speakers so the page
    // can measure the mouth against the sound it really plays.
    audioOut = new AudioOut();
    analyser = audioOut.ctx.createAnalyser();
    analyser.fftSize = 512;
    analyserBuf = new Float32Array(analyser.fftSize);
    audioOut.master.connect(analyser);
  }
  return audioOut;
}

function speak(text, bargeIn = false) {
  if (!session) throw new Error("no session: pick an avatar first");
  const clean = text.trim();
  if (!clean) return;
  resetMeasurements();
  state.speakAt = performance.now();
  session.speak(clean, bargeIn);
}

function stop() {
  session?.stop();
  ui.caption("");
}

// ------------------------------------------------------------------------- render loop

function resize() {
  const stage = $("#stage");
  const dpr = window.devicePixelRatio || 1;
  for (const c of [canvas2d, canvasGl]) {
    c.width = Math.round(stage.clientWidth * dpr);
    c.height = Math.round(stage.clientHeight * dpr);
  }
}
window.addEventListener("resize", resize);

// requestVideoFrameCallback tells which idle frame is on screen; currentTime is the fallback.
if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
  const onFrame = (_now, meta) => {
    mediaTime = meta.mediaTime;
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

let lastRaf = null;
let frameInterval = 1000 / 60;
const intervals = []; // the last display intervals (ms)

/**
 * How far ahead of this callback the frame drawn now will be on screen: a high percentile of
 * the recent display intervals, not their mean. When frames come irregularly (a loaded
 * machine, a slow GPU), the mean would put the mouth late on every long frame; the percentile
 * keeps it early by at most the jitter, and equals the interval when frames are regular.
 */
function displayLead(now) {
  if (lastRaf !== null) {
    intervals.push(Math.min(100, now - lastRaf));
    if (intervals.length > 30) intervals.shift();
    const sorted = [...intervals].sort((a, b) => a - b);
    frameInterval = sorted[Math.min(sorted.length - 1, Math.floor(0.8 * sorted.length))];
  }
  lastRaf = now;
  return frameInterval;
}
let pending = null; // the previous frame's drawn pts, checked once it is on screen
let lastDrawKey = null;
let lastOverlay = null;

function render(now) {
  requestAnimationFrame(render);
  const lead = displayLead(now);
  if (!overlay || !mouthTrack || !video.videoWidth) return;
  const t0 = performance.now();
  const displayMs = now + lead;
  const m = session ? session.mouthAt(displayMs) : { weights: {}, ptsMs: null, patch: null };
  // A paused (held or seeking) video shows the frame at currentTime; rVFC need not fire then.
  const mt = "requestVideoFrameCallback" in HTMLVideoElement.prototype && !video.paused
    ? mediaTime : video.currentTime;
  const idx = frameIndexAt(mt, videoFps, mouthTrack.affines.length);
  const fit = containFit(video.videoWidth, video.videoHeight, overlay.canvas.width,
    overlay.canvas.height);
  // Draw only when something on it changed (idle frame, weights, size): at rest the idle
  // loop's 25–30 fps, not the display's 60, and nothing while the video is held.
  const { width: cw, height: ch } = overlay.canvas;
  const key = overlay.kind === "onnx" ? `${idx}|${cw}x${ch}|p${m.patch?.seq ?? 0}`
    : `${idx}|${cw}x${ch}|${JSON.stringify(m.weights)}`;
  const drawn = key !== lastDrawKey || overlay !== lastOverlay;
  if (drawn) {
    overlay.draw(affineAt(mouthTrack, idx), m.weights, fit, m.patch ?? null);
    lastDrawKey = key;
    lastOverlay = overlay;
    if (m.patch && m.patch.seq !== state.lastPatchSeq) {
      state.lastPatchSeq = m.patch.seq;
      state.patchesShown += 1;
    }
  }
  const cost = performance.now() - t0;

  const act = activity(m.weights);
  state.lastWeights = m.weights;
  state.lastActivity = act;
  state.audioClockMs = m.ptsMs;
  state.utterance = m.utterance;
  state.frameIndex = idx;
  if (drawn) state.frameTimeMs.push(cost);
  if (state.frameTimeMs.length > 5000) state.frameTimeMs.shift();

  // Measurements while an utterance is heard.
  if (pending && session) {
    const heard = session.audio.ptsHeard(pending.utterance, now);
    if (heard !== null) state.clockOffsetsMs.push(pending.pts - heard);
    pending = null;
  }
  if (m.ptsMs !== null && m.utterance !== null) {
    pending = { utterance: m.utterance, pts: m.ptsMs };
    if (state.frames.length < FRAME_LOG_MAX) state.frames.push({ t: displayMs, pts: m.ptsMs, act });
    if (state.speakAt !== null && state.firstMouthMs === null && act > MOVE_THRESHOLD) {
      state.firstMouthMs = displayMs - state.speakAt;
      ui.stat("first-mouth", state.firstMouthMs);
    }
    if (analyser) {
      analyser.getFloatTimeDomainData(analyserBuf);
      let s = 0;
      for (let i = 0; i < analyserBuf.length; i++) s += analyserBuf[i] * analyserBuf[i];
      // The analyser sees the graph at currentTime; it reaches the speaker `latency` later.
      const lat = (audioOut.ctx.currentTime - audioOut.heardTime(now)) * 1000;
      if (state.audio.length < FRAME_LOG_MAX) {
        state.audio.push({ t: now + lat, rms: Math.sqrt(s / analyserBuf.length) });
      }
    }
  }
  if (state.clockOffsetsMs.length && state.clockOffsetsMs.length % 15 === 0) {
    const recent = state.clockOffsetsMs.slice(-30);
    // Mouth minus audio as a viewer meets it: the server's lead (in the viseme pts) plus
    // what this page adds (pts drawn − pts heard when the frame shows). + = mouth early.
    const lead = session?.hello?.lead_ms ?? 0;
    ui.stat("av", lead + recent.reduce((a, b) => a + b, 0) / recent.length, 1);
  }
  if (drawn && state.frameTimeMs.length % 30 === 0) {
    const r = state.frameTimeMs.slice(-60);
    ui.stat("frame", r.reduce((a, b) => a + b, 0) / r.length, 2);
  }
  $("#meter").style.setProperty("--level", act.toFixed(3));
}
requestAnimationFrame(render);

// ------------------------------------------------------------------------- wiring

async function refreshAvatars(selectId = null) {
  const list = await api.listAvatars().catch(() => []);
  const sel = $("#avatar");
  sel.innerHTML = "";
  for (const av of list) {
    const opt = document.createElement("option");
    opt.value = av.avatar_id;
    opt.textContent = av.name ?? av.avatar_id;
    sel.append(opt);
  }
  if (selectId) sel.value = selectId;
  return list;
}

async function refreshVoices() {
  const voices = await api.listVoices().catch(() => []);
  const sel = $("#voice");
  const want = params.get("voice");
  for (const v of voices) {
    const opt = document.createElement("option");
    opt.value = v.id;
    opt.textContent = v.language ? `${v.name ?? v.id} (${v.language})` : (v.name ?? v.id);
    sel.append(opt);
  }
  if (want) sel.value = want;
  if (!sel.value && voices.length) {
    sel.value = (voices.find((v) => /^en-us/.test(v.id)) ?? voices.find((v) => /^en/.test(v.id))
      ?? voices[0]).id;
  }
}

async function pick(avatarId) {
  const list = await api.listAvatars().catch(() => []);
  const av = list.find((a) => a.avatar_id === avatarId && a.idle_url)
    ?? await api.getAvatar(avatarId);
  await loadAvatar(av);
  if (![...$("#avatar").options].some((o) => o.value === av.avatar_id)) {
    await refreshAvatars(av.avatar_id);
  }
}

$("#speak-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("#text").value;
  const bargeIn = Boolean(session?.isSpeaking);
  try {
    speak(text, bargeIn);
  } catch (e) {
    ui.toast(String(e.message ?? e), true);
  }
});
$("#text").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) {
    ev.preventDefault();
    $("#speak-form").requestSubmit();
  }
});
$("#stop").addEventListener("click", () => stop());
$("#avatar").addEventListener("change", (ev) => pick(ev.target.value).catch(() => {}));
$("#voice").addEventListener("change", () => state.avatar && connect(state.avatar));
$("#upload").addEventListener("change", async (ev) => {
  const file = ev.target.files[0];
  if (!file) return;
  ui.busy(true, "Building the avatar (face analysis, idle loop, mouth)…");
  try {
    const av = await api.avatarize(file, $("#upload-backend").value || null);
    await refreshAvatars(av.avatar_id);
    await loadAvatar(av);
  } catch (e) {
    ui.toast(String(e.message ?? e), true);
  } finally {
    ui.busy(false);
    ev.target.value = "";
  }
});
// Browsers start audio only after a gesture (unless told otherwise): any click resumes it.
document.addEventListener("pointerdown", () => audioOut?.resume(), { once: false });

await refreshVoices();
const avatars = await refreshAvatars(params.get("avatar"));
const first = params.get("avatar") ?? avatars[0]?.avatar_id;
if (first) {
  await pick(first).catch((e) => ui.toast(String(e.message ?? e), true));
} else {
  ui.status("no avatar yet: upload a photo", "off");
}
