// One live session: the WebSocket, the utterances' audio and viseme tracks, clock sync, and the
// mouth weights at the audio clock's position.

import { AudioOut } from "./audio.js";
import {
  activity, ClockSync, clientMessages, decodeBinaryFrame, decodePatchFrame, decodeServerMessage,
  framesOf, KIND_AUDIO, KIND_AUDIO_VISEMES, KIND_PATCH, PatchTimeline, pcm16ToFloat32,
  VisemeTrack,
} from "./protocol.js";

const PING_EVERY_MS = 2000;
const BARGE_IN_RAMP_MS = 150;
// Close codes after which the session is gone but a new one can be made (docs/deploy.md):
// 1006 the connection dropped (a worker was killed), 1001/1012 the server went away or
// restarts (a drained worker), 4404 unknown / 4410 expired session, 4421 another worker's.
export const RECREATE_CODES = new Set([1001, 1006, 1011, 1012, 4404, 4410, 4421]);
const RECREATE_TRIES = 6;

export class LiveSession extends EventTarget {
  /**
   * `log(type, fields)` receives every event the page may want to show or measure.
   * `recreate()`, when given, returns the `ws_url` of a new session (POST /session-2d again):
   * if the connection is lost for good (RECREATE_CODES), the session is re-created (on a live
   * worker, behind a balancer) and an utterance that was cut is said again from its start.
   */
  constructor(wsUrl, { audio = null, log = () => {}, recreate = null } = {}) {
    super();
    this.wsUrl = wsUrl;
    this.recreate = recreate;
    // The text last spoken from here until its utterance is heard to the end (said again after
    // a recovery; the server may have sent all of it long before it is heard): the next
    // utterance_start after the speak is its utterance.
    this.unfinished = null;
    this.unfinishedId = null;
    this.awaitingStart = false;
    this.recovering = false;
    this.audio = audio ?? new AudioOut();
    this.log = log;
    this.clock = new ClockSync();
    this.tracks = new Map(); // utterance id → VisemeTrack
    this.patches = new Map(); // utterance id → PatchTimeline (variant C avatars)
    this.patchSeq = 0; // mouth patches decoded so far (each gets its number)
    this.order = []; // utterance ids in arrival order
    this.hello = null;
    this.ws = null;
    this.pingId = 0;
    this.pingTimer = null;
    this.current = null; // the utterance last started by the server
    this.closed = false;
  }

  connect() {
    return new Promise((resolve, reject) => {
      // visemes=inline: each audio chunk's frames in the same binary message as its sound
      // (one message per chunk instead of two; docs/protocol.md).
      const url = new URL(this.wsUrl);
      if (!url.searchParams.has("visemes")) url.searchParams.set("visemes", "inline");
      const ws = new WebSocket(url.href);
      ws.binaryType = "arraybuffer";
      this.ws = ws;
      let greeted = false;
      ws.onmessage = (ev) => {
        try {
          if (typeof ev.data === "string") {
            const msg = decodeServerMessage(ev.data);
            this.onMessage(msg);
            if (msg.type === "hello" && !greeted) {
              greeted = true;
              resolve(msg);
            }
          } else {
            this.onBinary(ev.data);
          }
        } catch (e) {
          this.log("protocol_error", { message: String(e.message ?? e) });
        }
      };
      ws.onclose = (ev) => {
        clearInterval(this.pingTimer);
        this.log("closed", { code: ev.code, reason: ev.reason });
        this.dispatchEvent(new CustomEvent("close", { detail: ev }));
        if (!greeted) reject(new Error(`connection closed (${ev.code}) before hello`));
        else if (this.ws === ws && !this.closed && this.recreate
          && RECREATE_CODES.has(ev.code)) this.recover(ev.code);
      };
      ws.onerror = () => this.log("ws_error", {});
    });
  }

  /**
   * The session was lost (its worker died or left): make a new one, connect, and say again
   * what was cut. Tries a few times (a balancer may need a moment to notice a dead worker).
   */
  async recover(code) {
    if (this.recovering) return;
    this.recovering = true;
    const t0 = performance.now();
    const again = this.unfinished;
    this.log("recovering", { code, unfinished: again !== null });
    // The new session numbers its utterances from 1 again: nothing of the old one may stay.
    for (const id of [...this.order]) {
      this.stopUtterance(id, 0, "lost");
      this.forget(id);
    }
    this.clock = new ClockSync();
    this.current = null;
    this.unfinishedId = null;
    this.awaitingStart = false;
    let delay = 50;
    try {
      for (let attempt = 1; attempt <= RECREATE_TRIES && !this.closed; attempt++) {
        try {
          this.wsUrl = await this.recreate();
          await this.connect();
          this.log("recovered", { after_ms: performance.now() - t0, attempt });
          this.dispatchEvent(new CustomEvent("recovered", { detail: { code } }));
          if (again !== null) this.speak(again);
          return;
        } catch (e) {
          this.log("recover_failed", { attempt, message: String(e?.message ?? e) });
          await new Promise((r) => setTimeout(r, delay));
          delay = Math.min(delay * 2, 1000);
        }
      }
      this.dispatchEvent(new CustomEvent("lost", { detail: { code } }));
    } finally {
      this.recovering = false;
    }
  }

  send(msg) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  ping() {
    this.send(clientMessages.ping(++this.pingId, performance.now()));
  }

  onMessage(msg) {
    switch (msg.type) {
      case "hello":
        this.hello = msg;
        this.log("hello", { session_id: msg.session_id, fps: msg.fps });
        this.ping();
        clearInterval(this.pingTimer);
        this.pingTimer = setInterval(() => this.ping(), PING_EVERY_MS);
        break;
      case "pong": {
        const s = this.clock.onPong(msg, performance.now());
        if (s) this.log("pong", { rtt_ms: s.rtt, offset_ms: s.offset });
        break;
      }
      case "utterance_start": {
        const id = msg.utterance;
        if (!this.tracks.has(id)) {
          this.tracks.set(id, new VisemeTrack(id));
          this.patches.set(id, new PatchTimeline());
          this.order.push(id);
        }
        this.audio.begin(id, msg.sample_rate);
        this.current = id;
        if (this.awaitingStart) {
          this.awaitingStart = false;
          this.unfinishedId = id;
        }
        // The server stamped the message with its clock; the ping/pong offset puts that on
        // ours: how long the message took from the server to this page (one way).
        const oneWay = this.clock.best && typeof msg.server_time_ms === "number"
          ? this.clock.toServer(performance.now()) - msg.server_time_ms : null;
        this.log("utterance_start", { utterance: id, text: msg.text ?? null,
          server_to_page_ms: oneWay });
        break;
      }
      case "viseme":
      case "visemes": {
        const id = msg.utterance ?? this.current;
        const track = this.tracks.get(id);
        if (track) {
          const frames = framesOf(msg);
          track.add(frames, msg.provisional === true);
          if (!track.loggedFirst && frames.length) {
            track.loggedFirst = true;
            this.log("first_visemes", { utterance: id, pts_ms: frames[0].pts_ms });
          }
        }
        break;
      }
      case "utterance_end": {
        const track = this.tracks.get(msg.utterance);
        if (track) track.end(msg.duration_ms);
        this.patches.get(msg.utterance)?.end(msg.duration_ms ?? track?.lastPtsMs ?? 0);
        this.log("utterance_end", { utterance: msg.utterance, reason: msg.reason ?? "done",
          duration_ms: msg.duration_ms ?? null });
        break;
      }
      case "stop":
        // The server's stop is the last word on its utterance, also after a stop sent from
        // here (the confirmation) or after utterance_end (the client may still be playing).
        this.log("stop_received", { utterance: msg.utterance, reason: msg.reason ?? null,
          at_pts_ms: msg.at_pts_ms ?? null });
        this.stopUtterance(msg.utterance ?? this.current, msg.ramp_ms ?? BARGE_IN_RAMP_MS,
          "server");
        break;
      case "error":
        this.log("error", { code: msg.code, message: msg.message });
        this.dispatchEvent(new CustomEvent("server-error", { detail: msg }));
        break;
      default:
        break;
    }
  }

  onBinary(buf) {
    const frame = decodeBinaryFrame(buf);
    if (frame.kind === KIND_AUDIO_VISEMES) {
      // The chunk's frames ride in front of its audio: handle them as the text event first.
      this.onMessage(decodeServerMessage(frame.visemesJson));
    } else if (frame.kind === KIND_PATCH) {
      this.onPatch(buf);
      return;
    } else if (frame.kind !== KIND_AUDIO) {
      return;
    }
    const track = this.tracks.get(frame.utterance);
    if (track?.stoppedAt) return; // nothing of a stopped utterance plays
    const u = this.audio.begin(frame.utterance, this.audio.get(frame.utterance)?.sampleRate
      ?? this.hello?.audio.sample_rate ?? 22050);
    const samples = pcm16ToFloat32(frame.payload);
    const first = u.startCtx === null;
    const when = this.audio.push(frame.utterance, frame.ptsMs, samples, u.sampleRate);
    if (first && when !== null) {
      this.log("first_audio", { utterance: frame.utterance, pts_ms: frame.ptsMs,
        ctx_start: when, heard_in_ms: (when - this.audio.heardTime()) * 1000 });
    }
  }

  /**
   * A mouth patch (variant C): decode its image off the main path and file it on its
   * utterance's timeline; the render loop shows the one due at the audio clock.
   */
  onPatch(buf) {
    const p = decodePatchFrame(buf);
    const timeline = this.patches.get(p.utterance);
    const track = this.tracks.get(p.utterance);
    if (!timeline || !track || track.stoppedAt) return; // unknown, stopped or forgotten
    const seq = ++this.patchSeq;
    createImageBitmap(new Blob([p.image], { type: p.mime })).then((bitmap) => {
      // Stopped or forgotten while the image decoded: nothing of it is shown.
      if (this.patches.get(p.utterance) !== timeline || timeline.stopMs !== null) {
        bitmap.close();
        return;
      }
      const item = { bitmap, x: p.x, y: p.y, w: p.w, h: p.h, idleIndex: p.idleIndex, seq };
      timeline.add(p.ptsMs, item)?.bitmap.close();
      if (timeline.size === 1 && !timeline.loggedFirst) {
        timeline.loggedFirst = true;
        this.log("first_patch", { utterance: p.utterance, pts_ms: p.ptsMs });
      }
    }, (e) => this.log("patch_error", { utterance: p.utterance, pts_ms: p.ptsMs,
      message: String(e?.message ?? e) }));
  }

  speak(text, bargeIn = false) {
    this.audio.resume();
    this.log("speak", { text, barge_in: bargeIn });
    this.unfinished = text;
    this.unfinishedId = null;
    this.awaitingStart = true;
    // A barge-in cuts what plays now, not a round trip later: the server's stop that follows
    // finds these utterances already stopped.
    if (bargeIn) for (const id of this.order) this.stopUtterance(id, BARGE_IN_RAMP_MS, "client");
    this.send(clientMessages.speak(text, bargeIn));
  }

  /**
   * Whether something is being said: an utterance heard now or still waiting for its audio
   * (a sentence typed now should barge in rather than queue behind it; a pause between two
   * words is still speech).
   */
  get isSpeaking() {
    return this.order.some((id) => {
      const track = this.tracks.get(id);
      if (!track || track.stoppedAt) return false;
      const pts = this.audio.ptsHeard(id);
      return pts === null || !track.finishedAt(pts);
    });
  }

  /** Barge-in from this side: ramp the mouth and fade the audio now, then tell the server. */
  stop() {
    this.log("stop_sent", {});
    this.unfinished = null; // stopped on purpose: nothing to say again
    this.awaitingStart = false;
    for (const id of this.order) this.stopUtterance(id, BARGE_IN_RAMP_MS, "client");
    this.send(clientMessages.stop());
  }

  stopUtterance(id, rampMs, by) {
    const track = this.tracks.get(id);
    if (!track || track.stoppedAt) return;
    const pts = this.audio.ptsHeard(id);
    this.patches.get(id)?.stop(Math.max(0, pts ?? 0));
    if (pts === null) {
      // Nothing heard yet: drop it silently.
      track.stop(0, rampMs);
      this.audio.fadeOut(id, 0);
    } else {
      track.stop(Math.max(0, pts), rampMs);
      this.audio.fadeOut(id, rampMs);
    }
    this.log("stopped", { utterance: id, by, at_pts_ms: pts, ramp_ms: track.stoppedAt.rampMs });
  }

  /**
   * The mouth for the frame about to be shown at `displayMs` (performance.now() time): the
   * utterance heard then, sampled at its audio clock. Returns {weights, utterance, ptsMs}.
   */
  mouthAt(displayMs) {
    let chosen = null;
    for (const id of this.order) {
      const pts = this.audio.ptsHeard(id, displayMs);
      if (pts === null) continue;
      // The latest utterance whose timeline has begun (with 40 ms of ease-in) is the one heard.
      if (pts >= -40) chosen = { id, pts };
    }
    if (!chosen) return { weights: {}, utterance: null, ptsMs: null, patch: null };
    const track = this.tracks.get(chosen.id);
    const weights = track.weightsAt(chosen.pts);
    // Variant C: the patch due now (the clock only moves on: older ones are released).
    const timeline = this.patches.get(chosen.id);
    const patch = timeline?.at(chosen.pts)?.item ?? null;
    if (timeline) for (const old of timeline.prune(chosen.pts)) old.bitmap.close();
    if (track.finishedAt(chosen.pts) && chosen.id !== this.current) this.forget(chosen.id);
    return { weights, utterance: chosen.id, ptsMs: chosen.pts, activity: activity(weights),
      patch };
  }

  forget(id) {
    if (id === this.unfinishedId) { // heard to its end: nothing to say again
      this.unfinished = null;
      this.unfinishedId = null;
    }
    for (const old of this.patches.get(id)?.clear() ?? []) old.bitmap.close();
    this.patches.delete(id);
    this.tracks.delete(id);
    this.order = this.order.filter((x) => x !== id);
    this.audio.forget(id);
  }

  close() {
    this.closed = true;
    clearInterval(this.pingTimer);
    this.ws?.close();
  }
}
