// lipcore live protocol v1: message decoding, the binary frame header, viseme interpolation on
// the audio timeline, the barge-in ramp and ping/pong clock sync.
//
// Pure logic, no DOM and no Web Audio: the same module runs in the browser (imported by app.js)
// and under node's test runner against the shared vectors in tests/vectors/. See
// docs/protocol.md for the wire format.

export const PROTOCOL_VERSION = 1;
export const HEADER_BYTES = 16;
export const KIND_AUDIO = 1;
export const KIND_PATCH = 2;
/** Audio with the `visemes` event of its span in front (`visemes=inline`). */
export const KIND_AUDIO_VISEMES = 3;
export const REST = "Rest";
export const DEFAULT_CLASSES = Object.freeze([
  "Rest", "AI", "E", "U", "O", "MBP", "FV", "L", "WQ", "R", "CH", "TH",
]);

/** A message that does not follow protocol v1; `.field` names what was wrong. */
export class ProtocolError extends Error {
  constructor(message, field = null) {
    super(message);
    this.name = "ProtocolError";
    this.field = field;
  }
}

// ------------------------------------------------------------------------- field checks

function need(msg, field, check, what) {
  if (!(field in msg)) {
    throw new ProtocolError(`'${msg.type}' message lacks the field '${field}'`, field);
  }
  const v = msg[field];
  if (!check(v)) {
    throw new ProtocolError(
      `'${msg.type}' message: field '${field}' must be ${what}, got ${JSON.stringify(v)}`,
      field,
    );
  }
  return v;
}

function optional(msg, field, check, what) {
  if (msg[field] === undefined || msg[field] === null) return undefined;
  return need(msg, field, check, what);
}

const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const isInt = (v) => Number.isInteger(v);
const isPosInt = (v) => Number.isInteger(v) && v > 0;
const isStr = (v) => typeof v === "string";
const isBool = (v) => typeof v === "boolean";
const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** Check a weights object: known class → weight in [0, 1], summing to at most 1 (+1e-3). */
export function checkWeights(weights, where = "weights", classes = DEFAULT_CLASSES) {
  if (!isObj(weights)) {
    throw new ProtocolError(`${where} must be an object {class: weight}`, "weights");
  }
  let sum = 0;
  for (const [name, w] of Object.entries(weights)) {
    if (!classes.includes(name)) {
      throw new ProtocolError(`${where}: unknown viseme class '${name}'`, "weights");
    }
    if (!isNum(w) || w < 0 || w > 1) {
      throw new ProtocolError(`${where}: weight of '${name}' must be in [0, 1], got ${w}`,
        "weights");
    }
    sum += w;
  }
  if (sum > 1 + 1e-3) {
    throw new ProtocolError(`${where}: weights sum to ${sum.toFixed(4)}, more than 1`, "weights");
  }
  return weights;
}

function checkFrames(msg, frames, classes) {
  if (frames.length === 0) {
    throw new ProtocolError(`'${msg.type}' message carries no frames`, "frames");
  }
  let last = -Infinity;
  return frames.map((f, i) => {
    if (!isObj(f) || !isNum(f.pts_ms) || f.pts_ms < 0) {
      throw new ProtocolError(`'${msg.type}' frame ${i} needs a pts_ms >= 0`, "frames");
    }
    if (f.pts_ms <= last) {
      throw new ProtocolError(
        `'${msg.type}' frames must have strictly increasing pts_ms (frame ${i}: ${f.pts_ms})`,
        "frames",
      );
    }
    last = f.pts_ms;
    return { pts_ms: f.pts_ms, weights: checkWeights(f.weights, `frame ${i}`, classes) };
  });
}

const isUtterance = (v) => Number.isInteger(v) && v >= 1;
const isPts = (v) => isNum(v) && v >= 0;
const isId = (v) => isStr(v) || isInt(v);

// Server messages may grow fields in newer servers: unknown fields are ignored. Client
// messages are strict (the server rejects unknown fields), so the client never sends any.
const SERVER_DECODERS = {
  hello(m) {
    need(m, "protocol", (v) => v === PROTOCOL_VERSION, `${PROTOCOL_VERSION}`);
    need(m, "session_id", isStr, "a string");
    need(m, "fps", (v) => isNum(v) && v > 0, "a positive number");
    need(m, "classes", (v) => Array.isArray(v) && v.every(isStr), "a list of class names");
    need(m, "audio", (v) => isObj(v) && (v.format ?? "s16le") === "s16le"
      && isPosInt(v.sample_rate) && (v.channels ?? 1) === 1,
    '{format: "s16le", sample_rate, channels: 1}');
    need(m, "lipsync", isObj, "an object {type, ...asset urls}");
    need(m, "server_time_ms", isNum, "a number");
    optional(m, "lead_ms", isNum, "a number");
    optional(m, "resumed", isBool, "a boolean");
    optional(m, "viseme_events", (v) => ["batched", "single", "inline"].includes(v),
      '"batched", "single" or "inline"');
    return m;
  },
  utterance_start(m) {
    need(m, "utterance", isUtterance, "an integer >= 1");
    need(m, "sample_rate", isPosInt, "a positive integer");
    optional(m, "text", isStr, "a string");
    optional(m, "server_time_ms", isNum, "a number");
    return m;
  },
  viseme(m, classes) {
    need(m, "pts_ms", isPts, "a number >= 0");
    checkWeights(need(m, "weights", isObj, "an object"), "weights", classes);
    need(m, "utterance", isUtterance, "an integer >= 1");
    return m;
  },
  visemes(m, classes) {
    need(m, "utterance", isUtterance, "an integer >= 1");
    const frames = need(m, "frames", Array.isArray, "a list of {pts_ms, weights}");
    optional(m, "provisional", (v) => typeof v === "boolean", "true or false");
    return { ...m, frames: checkFrames(m, frames, classes) };
  },
  utterance_end(m) {
    need(m, "utterance", isUtterance, "an integer >= 1");
    need(m, "duration_ms", isPts, "a number >= 0");
    optional(m, "reason", (v) => ["done", "stopped", "error"].includes(v),
      '"done", "stopped" or "error"');
    return m;
  },
  stop(m) {
    need(m, "utterance", (v) => isInt(v) && v >= 0, "an integer >= 0");
    need(m, "at_pts_ms", isPts, "a number >= 0");
    need(m, "ramp_ms", (v) => isNum(v) && v >= 100 && v <= 200, "a number in 100..200");
    optional(m, "reason", isStr, "a string");
    return m;
  },
  error(m) {
    need(m, "code", (v) => isStr(v) && v.length > 0, "a non-empty string");
    need(m, "message", (v) => isStr(v) && v.length > 0, "a non-empty string");
    optional(m, "utterance", isInt, "an integer");
    return m;
  },
  pong(m) {
    need(m, "id", isId, "an id");
    need(m, "client_time_ms", isNum, "a number");
    need(m, "server_time_ms", isNum, "a number");
    return m;
  },
};

function strict(m, fields) {
  for (const k of Object.keys(m)) {
    if (k !== "type" && !fields.includes(k)) {
      throw new ProtocolError(`'${m.type}' message has an unknown field '${k}'`, k);
    }
  }
  return m;
}

const CLIENT_DECODERS = {
  ping(m) {
    need(m, "id", isId, "an id");
    need(m, "client_time_ms", isNum, "a number");
    return strict(m, ["id", "client_time_ms"]);
  },
  speak(m) {
    need(m, "text", (v) => isStr(v) && v.length > 0, "a non-empty string");
    optional(m, "barge_in", isBool, "a boolean");
    return strict(m, ["text", "barge_in"]);
  },
  text_delta(m) {
    need(m, "delta", isStr, "a string");
    return strict(m, ["delta"]);
  },
  text_end(m) { return strict(m, []); },
  stop(m) { return strict(m, []); },
  audio_start(m) {
    optional(m, "text", isStr, "a string");
    optional(m, "language", (v) => isStr(v) && v.length <= 35, "a language code");
    optional(m, "barge_in", isBool, "a boolean");
    return strict(m, ["text", "language", "barge_in"]);
  },
  audio_end(m) { return strict(m, []); },
};

/** Message types the server sends, in docs/protocol.md order. */
export const SERVER_MESSAGE_TYPES = Object.freeze(Object.keys(SERVER_DECODERS));
/** Message types the client sends. */
export const CLIENT_MESSAGE_TYPES = Object.freeze(Object.keys(CLIENT_DECODERS));

function decodeWith(decoders, data, side, classes) {
  let msg = data;
  if (typeof data === "string") {
    try {
      msg = JSON.parse(data);
    } catch (e) {
      throw new ProtocolError(`${side} text frame is not JSON: ${e.message}`);
    }
  }
  if (!isObj(msg)) throw new ProtocolError(`${side} text frame must be a JSON object`);
  if (!isStr(msg.type)) throw new ProtocolError(`${side} message lacks a string 'type'`, "type");
  const decode = decoders[msg.type];
  if (!decode) {
    throw new ProtocolError(`unknown ${side} message type '${msg.type}'`, "type");
  }
  return decode(msg, classes);
}

/** Decode and validate a server → client text frame (string or parsed object). */
export function decodeServerMessage(data, classes = DEFAULT_CLASSES) {
  return decodeWith(SERVER_DECODERS, data, "server", classes);
}

/** Decode and validate a client → server text frame (used by tests and the fixture server). */
export function decodeClientMessage(data) {
  return decodeWith(CLIENT_DECODERS, data, "client", DEFAULT_CLASSES);
}

/** Build the client messages (the only place their shape is written down on this side). */
export const clientMessages = {
  ping: (id, clientTimeMs) => ({ type: "ping", id, client_time_ms: clientTimeMs }),
  speak: (text, bargeIn = false) => ({ type: "speak", text, barge_in: bargeIn }),
  textDelta: (delta) => ({ type: "text_delta", delta }),
  textEnd: () => ({ type: "text_end" }),
  stop: () => ({ type: "stop" }),
  // A streamed recording: binary frames of s16le PCM at hello.audio.sample_rate in between.
  audioStart: ({ text = null, language = null, bargeIn = false } = {}) => ({
    type: "audio_start", text, language, barge_in: bargeIn }),
  audioEnd: () => ({ type: "audio_end" }),
};

/** The viseme frames carried by a `viseme` or `visemes` message, as [{pts_ms, weights}]. */
export function framesOf(msg) {
  if (msg.type === "viseme") return [{ pts_ms: msg.pts_ms, weights: msg.weights }];
  if (msg.type === "visemes") return msg.frames;
  return [];
}

// ------------------------------------------------------------------------- binary frames

function asView(buf) {
  if (buf instanceof ArrayBuffer) return new DataView(buf);
  if (ArrayBuffer.isView(buf)) return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  throw new ProtocolError("binary frame must be an ArrayBuffer or a typed array");
}

/**
 * Decode a binary frame: the 16-byte little-endian header and the payload bytes.
 * Returns {kind, version, flags, utterance, ptsMs, payload: Uint8Array}.
 */
export function decodeBinaryFrame(buf) {
  const view = asView(buf);
  if (view.byteLength < HEADER_BYTES) {
    throw new ProtocolError(
      `binary frame of ${view.byteLength} bytes is shorter than the ${HEADER_BYTES}-byte header`,
    );
  }
  const kind = view.getUint8(0);
  const version = view.getUint8(1);
  if (version !== PROTOCOL_VERSION) {
    throw new ProtocolError(`binary frame version ${version}, expected ${PROTOCOL_VERSION}`);
  }
  if (kind !== KIND_AUDIO && kind !== KIND_PATCH && kind !== KIND_AUDIO_VISEMES) {
    throw new ProtocolError(
      `binary frame kind ${kind} is unknown (1 = audio, 2 = patch, 3 = audio with visemes)`);
  }
  const flags = view.getUint16(2, true);
  const utterance = view.getUint32(4, true);
  const ptsMs = view.getFloat64(8, true);
  let start = HEADER_BYTES;
  let visemesJson = null;
  if (kind === KIND_AUDIO_VISEMES) {
    if (view.byteLength < HEADER_BYTES + 4) {
      throw new ProtocolError("audio+visemes frame is shorter than its 4-byte event length");
    }
    const n = view.getUint32(HEADER_BYTES, true);
    start = HEADER_BYTES + 4 + n;
    if (start > view.byteLength) {
      throw new ProtocolError(`audio+visemes event of ${n} bytes runs past the frame's end`);
    }
    visemesJson = new TextDecoder().decode(
      new Uint8Array(view.buffer, view.byteOffset + HEADER_BYTES + 4, n));
  }
  const payload = new Uint8Array(view.buffer, view.byteOffset + start, view.byteLength - start);
  if (kind !== KIND_PATCH && payload.byteLength % 2 !== 0) {
    throw new ProtocolError(`audio payload of ${payload.byteLength} bytes is not whole s16 samples`);
  }
  // kind 3: `payload` is the PCM; `visemesJson` the event (decode it with decodeServerMessage).
  return { kind, version, flags, utterance, ptsMs, payload, visemesJson };
}

/** Encode a binary frame (the fixture server and tests use it; the client only decodes). */
export function encodeBinaryFrame({
  kind = KIND_AUDIO, utterance, ptsMs, payload, flags = 0, visemesJson = null,
}) {
  const bytes = payload instanceof Uint8Array ? payload
    : new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength);
  const event = visemesJson === null ? null : new TextEncoder().encode(visemesJson);
  const front = event === null ? 0 : 4 + event.byteLength;
  const out = new Uint8Array(HEADER_BYTES + front + bytes.byteLength);
  const view = new DataView(out.buffer);
  view.setUint8(0, event === null ? kind : KIND_AUDIO_VISEMES);
  view.setUint8(1, PROTOCOL_VERSION);
  view.setUint16(2, flags, true);
  view.setUint32(4, utterance, true);
  view.setFloat64(8, ptsMs, true);
  if (event !== null) {
    view.setUint32(HEADER_BYTES, event.byteLength, true);
    out.set(event, HEADER_BYTES + 4);
  }
  out.set(bytes, HEADER_BYTES + front);
  return out;
}

// ------------------------------------------------------------------------- mouth patches

/** Index of the last of the increasing `pts` that is ≤ `t` (the caller ensures pts[0] ≤ t). */
function lastAtOrBefore(pts, t) {
  let lo = 0;
  let hi = pts.length;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (pts[mid] <= t) lo = mid;
    else hi = mid;
  }
  return lo;
}

/** Kind 2 (variant C): the common header plus 16 bytes (docs/protocol.md, "Mouth patches"). */
export const PATCH_HEADER_BYTES = 32;
export const PATCH_FORMATS = Object.freeze({ 1: "jpeg", 2: "webp", 3: "png" });

/**
 * Parse a mouth-patch frame (kind 2): {utterance, ptsMs, idleIndex, x, y, w, h, format, mime,
 * image: Uint8Array (a view of `buf`)}. The box is in photo pixels.
 */
export function decodePatchFrame(buf) {
  const view = asView(buf);
  if (view.byteLength < PATCH_HEADER_BYTES) {
    throw new ProtocolError(`mouth-patch frame of ${view.byteLength} bytes is shorter than its `
      + `${PATCH_HEADER_BYTES}-byte header`);
  }
  const kind = view.getUint8(0);
  if (kind !== KIND_PATCH) {
    throw new ProtocolError(`binary frame kind ${kind} is not a mouth patch (${KIND_PATCH})`);
  }
  const version = view.getUint8(1);
  if (version !== PROTOCOL_VERSION) {
    throw new ProtocolError(`mouth-patch frame version ${version}, expected ${PROTOCOL_VERSION}`);
  }
  const code = view.getUint8(28);
  const format = PATCH_FORMATS[code];
  if (format === undefined) {
    throw new ProtocolError(`mouth-patch image format ${code} is unknown `
      + "(1 = JPEG, 2 = WebP, 3 = PNG)");
  }
  const w = view.getUint16(24, true);
  const h = view.getUint16(26, true);
  if (w < 1 || h < 1) throw new ProtocolError(`mouth-patch box of ${w}×${h} pixels is empty`);
  if (view.byteLength === PATCH_HEADER_BYTES) {
    throw new ProtocolError("mouth-patch frame carries no image");
  }
  return {
    kind,
    version,
    utterance: view.getUint32(4, true),
    ptsMs: view.getFloat64(8, true),
    idleIndex: view.getUint32(16, true),
    x: view.getUint16(20, true),
    y: view.getUint16(22, true),
    w,
    h,
    format,
    mime: `image/${format}`,
    image: new Uint8Array(view.buffer, view.byteOffset + PATCH_HEADER_BYTES,
      view.byteLength - PATCH_HEADER_BYTES),
  };
}

/**
 * The mouth patches of one utterance on its audio timeline. At audio clock `t` the latest patch
 * with `pts ≤ t` is shown; none before the first patch, none from the end of the utterance's
 * audio or from a barge-in on (the idle loop's own mouth then). Between the last patch received
 * and the end the last one holds (the stream is catching up). Items are opaque (ImageBitmaps in
 * the page); what `add` replaces and `prune` drops is returned so the caller can release it.
 */
export class PatchTimeline {
  constructor() {
    this.pts = [];
    this.items = [];
    this.endMs = null;
    this.stopMs = null;
  }

  get size() {
    return this.pts.length;
  }

  /** Add a patch; returns the item it replaced (same pts), else null. */
  add(ptsMs, item) {
    const n = this.pts.length;
    if (n === 0 || ptsMs > this.pts[n - 1]) {
      this.pts.push(ptsMs);
      this.items.push(item);
      return null;
    }
    const i = this.pts.findIndex((p) => p >= ptsMs);
    if (this.pts[i] === ptsMs) {
      const old = this.items[i];
      this.items[i] = item;
      return old;
    }
    this.pts.splice(i, 0, ptsMs);
    this.items.splice(i, 0, item);
    return null;
  }

  /** The utterance's audio ends at `durationMs` (utterance_end). */
  end(durationMs) {
    this.endMs = durationMs;
  }

  /** A barge-in at `ptsMs`: no patch from there on. */
  stop(ptsMs) {
    if (this.stopMs === null) this.stopMs = ptsMs;
  }

  indexAt(tMs) {
    if (this.stopMs !== null && tMs >= this.stopMs) return -1;
    if (this.endMs !== null && tMs >= this.endMs) return -1;
    if (this.pts.length === 0 || tMs < this.pts[0]) return -1;
    return lastAtOrBefore(this.pts, tMs);
  }

  /** The patch to show at `tMs`: {ptsMs, item}, or null for the idle mouth. */
  at(tMs) {
    const i = this.indexAt(tMs);
    return i < 0 ? null : { ptsMs: this.pts[i], item: this.items[i] };
  }

  /** True once nothing more will be shown after `tMs`. */
  finishedAt(tMs) {
    const stop = Math.min(this.stopMs ?? Infinity, this.endMs ?? Infinity);
    return tMs >= stop;
  }

  /** Drop the patches before the one shown at `tMs` (the clock only moves on); returns them. */
  prune(tMs) {
    const i = this.indexAt(tMs);
    const k = i < 0 ? (this.finishedAt(tMs) ? this.pts.length : 0) : i;
    if (k === 0) return [];
    this.pts.splice(0, k);
    return this.items.splice(0, k);
  }

  /** Drop everything (the utterance is forgotten); returns the items. */
  clear() {
    this.pts = [];
    const items = this.items;
    this.items = [];
    return items;
  }
}

/** Mono s16le PCM bytes → Float32Array in [-1, 1). Copies, so odd offsets are fine. */
export function pcm16ToFloat32(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.byteLength >> 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = view.getInt16(2 * i, true) / 32768;
  return out;
}

// ------------------------------------------------------------------------- weights

/** Weights with Rest made explicit: every class of `classes` present, Rest = 1 − Σ others. */
export function withRest(weights, classes = DEFAULT_CLASSES) {
  const out = {};
  let sum = 0;
  for (const c of classes) {
    if (c === REST) continue;
    const w = Math.min(1, Math.max(0, weights[c] ?? 0));
    out[c] = w;
    sum += w;
  }
  if (sum > 1) for (const c of Object.keys(out)) out[c] /= sum;
  out[REST] = Math.max(0, 1 - Math.min(1, sum));
  return out;
}

/** Linear blend (1 − a)·w0 + a·w1 over the union of classes; Rest is implicit. */
export function mixWeights(w0, w1, a) {
  const out = {};
  const keys = new Set([...Object.keys(w0), ...Object.keys(w1)]);
  keys.delete(REST);
  for (const k of keys) {
    const v = (1 - a) * (w0[k] ?? 0) + a * (w1[k] ?? 0);
    if (v > 0) out[k] = v;
  }
  return out;
}

/** Sum of the non-Rest weights: how far the mouth is from its rest shape (0 = at rest). */
export function activity(weights) {
  let s = 0;
  for (const [k, v] of Object.entries(weights)) if (k !== REST) s += v;
  return s;
}

/**
 * The `n` highest-weighted classes (Rest included, as 1 − Σ), renormalised to sum to 1: what
 * the sprite renderer cross-fades. Ties break by class order so the choice is stable.
 */
export function topCells(weights, n = 3, classes = DEFAULT_CLASSES) {
  const full = withRest(weights, classes);
  const ranked = classes
    .map((c, i) => ({ cls: c, w: full[c] ?? 0, i }))
    .filter((e) => e.w > 1e-4)
    .sort((a, b) => b.w - a.w || a.i - b.i)
    .slice(0, n);
  const total = ranked.reduce((s, e) => s + e.w, 0);
  if (total <= 0) return [{ cls: REST, w: 1 }];
  return ranked.map((e) => ({ cls: e.cls, w: e.w / total }));
}

// ------------------------------------------------------------------------- interpolation

/** Smoothstep 0 → 1 over [0, 1]: the ramp's shape (no velocity jump at either end). */
export function smoothstep(x) {
  const t = Math.min(1, Math.max(0, x));
  return t * t * (3 - 2 * t);
}

/** Barge-in ramp: the weights `from` scaled toward Rest, `elapsedMs` into a `rampMs` ramp. */
export function rampToRest(from, elapsedMs, rampMs) {
  const k = rampMs <= 0 ? 0 : 1 - smoothstep(elapsedMs / rampMs);
  const out = {};
  for (const [c, w] of Object.entries(from)) if (c !== REST && w * k > 0) out[c] = w * k;
  return out;
}

/**
 * The viseme track of one utterance: frames on its audio timeline, sampled at any time by
 * linear interpolation. Before the first frame and after the end, the mouth is at Rest; between
 * the last frame received and the end of the utterance it holds the last frame (the stream has
 * not caught up yet, and a held shape is less wrong than a jump to Rest).
 */
export class VisemeTrack {
  constructor(utterance = 0) {
    this.utterance = utterance;
    this.pts = [];
    this.weights = [];
    this.guessed = new Set(); // pts of provisional frames a final frame has not replaced yet
    this.endMs = null; // set by utterance_end (duration) or a stop
    this.stoppedAt = null; // {ptsMs, rampMs} after a barge-in
  }

  /**
   * Add frames (sorted, strictly increasing). `provisional` frames (a `visemes` event with
   * `provisional: true`) are the server's guess before the look-ahead arrived: a frame with the
   * same pts replaces them; any other duplicate is dropped.
   */
  add(frames, provisional = false) {
    for (const f of frames) {
      const last = this.pts.length ? this.pts[this.pts.length - 1] : -Infinity;
      if (f.pts_ms > last) {
        this.pts.push(f.pts_ms);
        this.weights.push(f.weights);
      } else {
        // At or before the end: a replacement of a guess, else out of order (which breaks the
        // protocol's promise; inserted anyway so one bad frame cannot freeze the mouth).
        const i = this.pts.findIndex((p) => p >= f.pts_ms);
        if (this.pts[i] === f.pts_ms) {
          if (!this.guessed.has(f.pts_ms)) continue;
          this.weights[i] = f.weights;
        } else {
          this.pts.splice(i, 0, f.pts_ms);
          this.weights.splice(i, 0, f.weights);
        }
      }
      if (provisional) this.guessed.add(f.pts_ms);
      else this.guessed.delete(f.pts_ms);
    }
  }

  get lastPtsMs() {
    return this.pts.length ? this.pts[this.pts.length - 1] : null;
  }

  end(durationMs) {
    this.endMs = durationMs ?? this.lastPtsMs ?? 0;
  }

  /** Barge-in at `ptsMs` on this timeline: ramp from the shape there to Rest over `rampMs`. */
  stop(ptsMs, rampMs = 150) {
    if (this.stoppedAt) return;
    // The shape shown there, end ramp included (a stop after the end ramps from Rest).
    const from = this.weightsAt(ptsMs);
    this.stoppedAt = { ptsMs, rampMs: Math.min(200, Math.max(100, rampMs)), from };
  }

  /** Raw interpolation of the received frames at `tMs` (no ramp, no end handling). */
  sample(tMs) {
    const n = this.pts.length;
    if (n === 0 || tMs < this.pts[0]) {
      // Ease in from Rest toward the first frame over one frame interval (~40 ms), so the
      // first shape does not pop.
      if (n === 0) return {};
      const lead = 40;
      const a = 1 - (this.pts[0] - tMs) / lead;
      return a <= 0 ? {} : mixWeights({}, this.weights[0], a);
    }
    if (tMs >= this.pts[n - 1]) return { ...this.weights[n - 1] };
    const lo = lastAtOrBefore(this.pts, tMs);
    const hi = lo + 1;
    const a = (tMs - this.pts[lo]) / (this.pts[hi] - this.pts[lo]);
    return mixWeights(this.weights[lo], this.weights[hi], a);
  }

  /** The mouth at `tMs` on the audio timeline: frames, then the end or barge-in ramp. */
  weightsAt(tMs) {
    if (this.stoppedAt) {
      const { ptsMs, rampMs, from } = this.stoppedAt;
      if (tMs < ptsMs) return this.sample(tMs);
      return rampToRest(from, tMs - ptsMs, rampMs);
    }
    if (this.endMs !== null && tMs >= this.endMs) {
      // Close over one frame after the end, toward Rest.
      const from = this.sample(this.endMs);
      return rampToRest(from, tMs - this.endMs, 100);
    }
    return this.sample(tMs);
  }

  /** True once the mouth at `tMs` is back at Rest for good. */
  finishedAt(tMs) {
    if (this.stoppedAt) return tMs >= this.stoppedAt.ptsMs + this.stoppedAt.rampMs;
    return this.endMs !== null && tMs >= this.endMs + 100;
  }
}

// ------------------------------------------------------------------------- clock sync

/**
 * The server's clock from ping/pong. Each pong gives one sample: round trip
 * `rtt = now − client_time_ms` and offset `server_time_ms − (client_time_ms + rtt / 2)`
 * (server minus client). The sample with the smallest round trip among the last `window` is the
 * least disturbed by queueing, so that one is used (NTP's filter, in short).
 */
export class ClockSync {
  constructor(window = 8) {
    this.window = window;
    this.samples = [];
  }

  onPong(pong, nowMs) {
    const rtt = nowMs - pong.client_time_ms;
    if (!(rtt >= 0)) return null; // a pong from before a clock reset: ignore
    const offset = pong.server_time_ms - (pong.client_time_ms + rtt / 2);
    const sample = { rtt, offset };
    this.samples.push(sample);
    if (this.samples.length > this.window) this.samples.shift();
    return sample;
  }

  get best() {
    if (!this.samples.length) return null;
    return this.samples.reduce((a, b) => (b.rtt < a.rtt ? b : a));
  }

  /** Server minus client clock in ms (0 until the first pong). */
  get offsetMs() {
    return this.best?.offset ?? 0;
  }

  get rttMs() {
    return this.best?.rtt ?? null;
  }

  /** A client time (ms) expressed on the server's clock. */
  toServer(clientMs) {
    return clientMs + this.offsetMs;
  }
}

// ------------------------------------------------------------------------- mesh

/**
 * Blend the per-viseme control-point offsets of a meshdef by weight: Σ w_c · targets[c]
 * (Rest has no offsets). Returns a Float32Array [dx0, dy0, dx1, dy1, ...] in ROI pixels.
 */
export function blendMeshOffsets(meshdef, weights) {
  const n = meshdef.grid.cols * meshdef.grid.rows;
  const out = new Float32Array(2 * n);
  for (const [c, w] of Object.entries(weights)) {
    if (c === REST || !(w > 0)) continue;
    const t = meshdef.targets[c];
    if (!t) continue;
    for (let i = 0; i < n; i++) {
      out[2 * i] += w * t[i][0];
      out[2 * i + 1] += w * t[i][1];
    }
  }
  return out;
}

// ------------------------------------------------------------------------- placement

/**
 * The mouth track's affine of idle frame `index` ([a, b, c, d, e, f]: photo px → frame px),
 * wrapped around the loop.
 */
export function affineAt(track, index) {
  const n = track.affines.length;
  return track.affines[((index % n) + n) % n];
}

/** Idle frame index shown at media time `mediaTime` (s) of a loop at `fps` with `frames`. */
export function frameIndexAt(mediaTime, fps, frames) {
  // Frame i is shown for mediaTime in [i/fps, (i+1)/fps); the small epsilon absorbs
  // presentation timestamps that land a hair before the frame boundary.
  const i = Math.floor(mediaTime * fps + 1e-3);
  return ((i % frames) + frames) % frames;
}
