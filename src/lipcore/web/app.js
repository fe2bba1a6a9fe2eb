// The lipcore web client: layer 0 the idle loop <video>, layer 1 the mouth overlay <canvas>,
// driven by the live session on the audio clock. `window.lipcore` exposes the state tests and
// the benchmark measure (tests/clients, benchmarks/bench_browser.py).

import * as api from "./api.js";
import { AudioOut } from "./audio.js";
import {
  avatarName, avatarUsability, defaultVoice, groupVoices, plainMessage,
} from "./choices.js";
import { containFit } from "./overlay.js";
import { activity, affineAt, frameIndexAt } from "./protocol.js";
import { helpers, rendererFor, showNotice } from "./renderers.js";
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
  notice: null, // shown over the stage when the mouth is not drawn (unknown kind, unusable)
  error: null,
  sessionId: null, // the server's id of the live session (one at a time: a switch closes it)
  pageSpeakPending: false, // a sentence typed here whose utterance_start has not come yet
  avatars: [], // the avatar list as shown: {avatar_id, name, usable, reason, thumbnail_url}
  backends: null, // GET /backends: the lip-sync back ends and whether this server can run them
};

function log(type, fields = {}) {
  const ev = { t: performance.now(), type, ...fields };
  state.events.push(ev);
  if (state.events.length > 2000) state.events.shift();
  if (type === "utterance_start") {
    // Speech started elsewhere (the REST API, another tab's call) gets its own figures: it
    // starts where the server started it. A sentence typed here keeps the time it was typed.
    if (state.pageSpeakPending) {
      state.pageSpeakPending = false;
    } else if (!speakingBesides(fields.utterance)) {
      resetMeasurements();
      clearFigures();
      state.speakAt = ev.t - Math.max(0, fields.server_to_page_ms ?? 0);
    }
  }
  if (type === "first_audio" && state.speakAt !== null && state.firstAudioMs === null) {
    state.firstAudioMs = ev.t + ev.heard_in_ms - state.speakAt;
    ui.stat("first-audio", state.firstAudioMs);
  }
  if (type === "pong") ui.stat("rtt", fields.rtt_ms);
  if (type === "error" || type === "protocol_error") {
    ui.toast(plainMessage(fields.message ?? type), true);
  }
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

/** Whether an utterance other than `id` is still heard or waiting for its audio. */
function speakingBesides(id) {
  if (!session) return false;
  return session.order.some((other) => {
    if (other === id) return false;
    const track = session.tracks.get(other);
    if (!track || track.stoppedAt) return false;
    const pts = session.audio.ptsHeard(other);
    return pts === null || !track.finishedAt(pts);
  });
}

/** The latency figures on screen back to "–" (a new session, new speech). */
function clearFigures() {
  for (const id of ["first-audio", "first-mouth", "av", "net"]) ui.stat(id, null);
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
  overlay: () => overlay, // the mouth renderer's overlay on screen (null: none for this kind)
  mouthRegion,
  holdIdle,
  speak: (text, bargeIn = false) => speak(text, bargeIn),
  stop: () => stop(),
  envelopeLagMs,
  resetMeasurements,
  session: () => session,
};

// ------------------------------------------------------------------------- UI helpers

let captionShown = false;

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
    captionShown = Boolean(text);
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

/** How the upload chooser names the shipped back ends; a plugin's kind shows as itself. */
const BACKEND_LABELS = Object.freeze({
  sprites: "Sprites (cheapest)", mesh: "Mesh warp (smoother)", onnx: "Wav2Lip, server-rendered",
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
    closeSession();
    const assets = av.lipsync_assets;
    // The mouth's renderer by kind (built in, or the back end's own module). None: the idle
    // loop plays alone with a notice saying why.
    const { renderer, reason } = av.usable === false
      ? { renderer: null, reason: av.reason ?? "this avatar cannot be used on this server" }
      : await rendererFor(assets);
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
    const useGl = renderer?.canvas === "webgl";
    overlay = null;
    canvas2d.hidden = !renderer || useGl;
    canvasGl.hidden = !renderer || !useGl;
    if (renderer) overlay = await renderer.load(useGl ? canvasGl : canvas2d, assets, helpers);
    state.avatar = av.avatar_id;
    state.backend = assets.type;
    state.error = null;
    state.notice = reason ? `${reason}: playing the idle loop without a mouth` : null;
    showNotice($("#stage"), state.notice);
    $("#backend").textContent = renderer?.label ?? assets.type;
    markCurrent(av.avatar_id);
    resize();
    if (av.usable === false) ui.status("not connected", "off");
    else await connect(av.avatar_id);
  } catch (e) {
    state.error = plainMessage(e.message ?? e);
    ui.toast(state.error, true);
    ui.status("not connected", "off");
    throw e;
  } finally {
    ui.busy(false);
  }
}

let connectSeq = 0; // which connect() is the current one: older ones' late events are ignored

/**
 * End the live session: its socket, its audio (faded, so nothing of it plays on) and the server's
 * session (DELETE, so a voice switch does not leave one behind).
 */
function closeSession() {
  connectSeq += 1;
  const old = session;
  const oldId = state.sessionId;
  session = null;
  state.sessionId = null;
  state.ready = false;
  state.pageSpeakPending = false;
  if (old) {
    old.close();
    old.audio.close();
  }
  if (oldId) api.deleteSession(oldId).catch(() => {});
}

async function connect(avatarId) {
  closeSession();
  const mine = connectSeq;
  ui.status("connecting…", "wait");
  ui.caption("");
  resetMeasurements();
  clearFigures();
  const voice = $("#voice").value || params.get("voice") || "en-us";
  const s = await api.createSession(avatarId, voice);
  if (mine !== connectSeq) {
    // Switched again while this one was being created: it is not wanted.
    api.deleteSession(s.session_id).catch(() => {});
    return;
  }
  // A new audio player per session: its utterances are numbered from 1 again, and must not meet
  // the old session's (stopped) utterance 1. The page keeps one AudioContext for all of them.
  const live = new LiveSession(s.ws_url, {
    audio: sessionAudio(),
    log: (type, fields) => {
      if (mine === connectSeq) log(type, fields);
    },
    // A lost session (its worker died or restarts) is made again behind the balancer.
    recreate: async () => {
      const again = await api.createSession(avatarId, voice);
      if (mine === connectSeq) state.sessionId = again.session_id;
      return again.ws_url;
    },
  });
  session = live;
  state.sessionId = s.session_id;
  await live.connect();
  if (mine !== connectSeq) return;
  state.ready = true;
  ui.status("live", "on");
}

let audioCtx = null;
let audioBus = null; // every session's player goes through here, to the speakers and analyser
let audioOut = null; // the current session's player
let analyser = null;
let analyserBuf = null;
function sessionAudio() {
  if (!audioCtx) {
    // One AudioContext for the page; the analyser taps what goes to the speakers so the page
    // can measure the mouth against the sound it really plays.
    audioCtx = new AudioContext({ latencyHint: "interactive" });
    audioBus = audioCtx.createGain();
    audioBus.connect(audioCtx.destination);
    analyser = audioCtx.createAnalyser();
    analyser.fftSize = 512;
    analyserBuf = new Float32Array(analyser.fftSize);
    audioBus.connect(analyser);
  }
  audioOut = new AudioOut({ ctx: audioCtx, dest: audioBus });
  return audioOut;
}

function speak(text, bargeIn = false) {
  if (!session || !state.ready) {
    throw new Error(state.avatar ? "Not connected yet: wait a moment, or pick the avatar again."
      : "Pick or upload an avatar first.");
  }
  const clean = String(text ?? "").trim();
  if (!clean) throw new Error("Type something for the avatar to say first.");
  resetMeasurements();
  state.speakAt = performance.now();
  state.pageSpeakPending = true;
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
  // The caption belongs to speech: once nothing is heard or waiting, it goes.
  if (captionShown && !(session?.isSpeaking ?? false)) ui.caption("");
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

/** GET /backends as the page uses it; null when the server does not list them. */
async function refreshBackends() {
  const body = await api.listBackends().catch(() => null);
  state.backends = body?.backends ?? null;
  const sel = $("#upload-backend");
  if (!state.backends) return; // an older server: keep the static choices
  sel.innerHTML = "";
  // Only what this server can run and this page can draw; the reasons of the others are shown
  // as a note, so that a missing model is not a surprise after a minute of building.
  const runnable = state.backends.filter((b) => b.available);
  for (const b of runnable) {
    const opt = document.createElement("option");
    opt.value = b.type;
    opt.textContent = BACKEND_LABELS[b.type] ?? b.type;
    sel.append(opt);
  }
  const preferred = runnable.find((b) => b.type === body.default) ?? runnable[0];
  if (preferred) sel.value = preferred.type;
  sel.disabled = runnable.length === 0;
  $("#upload-label").classList.toggle("disabled", runnable.length === 0);
  const off = state.backends.filter((b) => !b.available);
  const note = $("#backend-note");
  note.textContent = off.map((b) => `${BACKEND_LABELS[b.type] ?? b.type} is not offered: ${b.reason}`)
    .join(" ");
  note.hidden = off.length === 0;
}

/** The avatar list, from the server: names, thumbnails, whether each can run here and why. */
async function refreshAvatars(selectId = null) {
  const list = await api.listAvatars().catch(() => []);
  state.avatars = list.map((av) => ({ ...av, ...avatarUsability(av, state.backends),
    displayName: avatarName(av) }));
  const sel = $("#avatar");
  sel.innerHTML = "";
  const strip = $("#avatar-list");
  strip.innerHTML = "";
  for (const av of state.avatars) {
    const opt = document.createElement("option");
    opt.value = av.avatar_id;
    opt.textContent = av.usable ? av.displayName : `${av.displayName} (can't run here)`;
    sel.append(opt);

    const item = document.createElement("button");
    item.type = "button";
    item.className = "avatar-item";
    item.dataset.id = av.avatar_id;
    item.dataset.usable = String(av.usable);
    item.title = av.usable ? av.displayName : `${av.displayName}: ${av.reason ?? "can't run here"}`;
    const thumb = document.createElement(av.thumbnail_url ? "img" : "span");
    thumb.className = "thumb";
    if (av.thumbnail_url) {
      thumb.src = absolute(av.thumbnail_url);
      thumb.alt = "";
    } else {
      thumb.textContent = av.displayName.slice(0, 1).toUpperCase();
    }
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = av.displayName;
    item.append(thumb, name);
    if (!av.usable) {
      const why = document.createElement("span");
      why.className = "reason";
      why.textContent = av.reason ?? "can't run on this server";
      item.append(why);
    }
    item.addEventListener("click", () => pick(av.avatar_id).catch(() => {}));
    strip.append(item);
  }
  if (selectId) sel.value = selectId;
  markCurrent(selectId ?? state.avatar);
  return state.avatars;
}

function markCurrent(avatarId) {
  if (avatarId && [...$("#avatar").options].some((o) => o.value === avatarId)) {
    $("#avatar").value = avatarId;
  }
  for (const el of document.querySelectorAll(".avatar-item")) {
    el.classList.toggle("current", el.dataset.id === avatarId);
  }
}

function languageLabel(code) {
  try {
    return new Intl.DisplayNames([navigator.language || "en", "en"], { type: "language" }).of(code);
  } catch {
    return code;
  }
}

async function refreshVoices() {
  const voices = await api.listVoices().catch(() => []);
  const sel = $("#voice");
  sel.innerHTML = "";
  for (const group of groupVoices(voices, languageLabel)) {
    const og = document.createElement("optgroup");
    og.label = group.label;
    for (const v of group.voices) {
      const opt = document.createElement("option");
      opt.value = v.id;
      opt.textContent = v.name ?? v.id;
      og.append(opt);
    }
    sel.append(og);
  }
  // The select holds its first option by itself: the default is chosen, not left to that.
  const id = defaultVoice(voices, { wanted: params.get("voice"),
    languages: navigator.languages?.length ? navigator.languages : [navigator.language] });
  if (id !== null) sel.value = id;
}

/** Open an avatar, unless it cannot run here: then say why and leave no session open. */
async function pick(avatarId) {
  const av = state.avatars.find((a) => a.avatar_id === avatarId && a.idle_url)
    ?? await api.getAvatar(avatarId);
  const { usable, reason } = avatarUsability(av, state.backends);
  if (!usable) {
    // Said, never opened: the avatar on screen (if any) stays live.
    const why = reason ?? "its lip-sync back end is not available on this server";
    state.unusable = { avatar_id: av.avatar_id, reason: why };
    ui.toast(`${avatarName(av)} can't run here: ${why}`, true);
    if (state.avatar && session) {
      markCurrent(state.avatar);
    } else {
      // Nothing live on screen: show it as it is, the idle loop with a notice saying why.
      await loadAvatar({ ...av, usable: false, reason: why }).catch(() => {});
      markCurrent(av.avatar_id);
      ui.status("avatar can't run here", "off");
    }
    return;
  }
  state.unusable = null;
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
    $("#text").focus();
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
$("#voice").addEventListener("change", () => {
  if (state.avatar) connect(state.avatar).catch((e) => ui.toast(plainMessage(e.message ?? e), true));
});
$("#upload").addEventListener("change", async (ev) => {
  const file = ev.target.files[0];
  if (!file) return;
  const before = { text: $("#status").textContent, kind: $("#status").dataset.kind };
  ui.busy(true, "Building the avatar (face analysis, idle loop, mouth)…");
  ui.status("building avatar…", "wait");
  try {
    const name = $("#upload-name").value.trim() || file.name.replace(/\.[^.]+$/, "");
    const av = await api.avatarize(file, $("#upload-backend").value || null, name);
    $("#upload-name").value = "";
    await refreshAvatars(av.avatar_id);
    await pick(av.avatar_id);
  } catch (e) {
    ui.toast(plainMessage(e.message ?? e), true);
    if ($("#status").textContent === "building avatar…") ui.status(before.text, before.kind);
  } finally {
    ui.busy(false);
    ev.target.value = "";
  }
});
// Browsers start audio only after a gesture (unless told otherwise): any click resumes it.
document.addEventListener("pointerdown", () => audioOut?.resume(), { once: false });
// The server's session ends with the page (a reload must not leave one behind).
window.addEventListener("pagehide", () => closeSession());

await refreshVoices();
await refreshBackends();
const avatars = await refreshAvatars(params.get("avatar"));
// The newest avatar that can run here; one that cannot is never opened by itself.
const first = params.get("avatar") ?? avatars.find((a) => a.usable)?.avatar_id;
if (first) {
  await pick(first).catch((e) => ui.toast(plainMessage(e.message ?? e), true));
} else if (avatars.length) {
  ui.status("no avatar can run here: upload a photo", "off");
} else {
  ui.status("no avatar yet: upload a photo", "off");
}
