// Web Audio playback of the utterances' PCM chunks, scheduled gap-free on the audio timeline,
// and the audio clock the mouth is rendered on.

/** Seconds of audio buffered before the first chunk of an utterance plays (absorbs jitter). */
export const JITTER_BUFFER_S = 0.05;
/** A chunk due less than this far ahead is an underrun: the utterance timeline slides later. */
const MIN_LEAD_S = 0.005;

/** One utterance's audio: its gain (for the barge-in fade) and where pts 0 sits in context time. */
class UtteranceAudio {
  constructor(ctx, dest, id, sampleRate) {
    this.id = id;
    this.sampleRate = sampleRate;
    this.gain = ctx.createGain();
    this.gain.connect(dest);
    this.startCtx = null; // context time of pts 0
    this.endCtx = null; // context time where the scheduled audio ends
    this.sources = [];
    this.underruns = 0;
    this.stopped = false;
    this.firstChunkCtx = null;
    this.schedule = []; // [start, end] context seconds of each chunk, in arrival order
  }
}

export class AudioOut {
  /**
   * `ctx`/`dest`: share one AudioContext between players (a page opens one per session: the
   * utterance numbers restart with each session, so one player per session keeps a new
   * session's utterance 1 apart from the old one's). Without them the player owns its context.
   */
  constructor({ ctx = null, dest = null } = {}) {
    // "interactive" asks for the smallest output buffer the platform allows.
    this.ctx = ctx ?? new AudioContext({ latencyHint: "interactive" });
    this.master = this.ctx.createGain();
    this.master.connect(dest ?? this.ctx.destination);
    this.utterances = new Map();
    this.lastEndCtx = 0;
    this.closed = false;
  }

  async resume() {
    if (this.ctx.state !== "running") await this.ctx.resume();
  }

  /** Output latency in seconds (device + processing), as far as the browser reports it. */
  get latencyS() {
    return (this.ctx.outputLatency || 0) + (this.ctx.baseLatency || 0);
  }

  /**
   * The context time of the sample at the speaker right now. getOutputTimestamp() ties the
   * device's output position to performance.now(); without it, currentTime minus the reported
   * latency is the best estimate.
   */
  heardTime(nowMs = performance.now()) {
    const ts = this.ctx.getOutputTimestamp ? this.ctx.getOutputTimestamp() : null;
    if (ts && ts.contextTime > 0 && ts.performanceTime > 0) {
      return ts.contextTime + (nowMs - ts.performanceTime) / 1000;
    }
    return this.ctx.currentTime - this.latencyS;
  }

  begin(id, sampleRate) {
    let u = this.utterances.get(id);
    if (!u) {
      u = new UtteranceAudio(this.ctx, this.master, id, sampleRate);
      this.utterances.set(id, u);
    }
    return u;
  }

  get(id) {
    return this.utterances.get(id) ?? null;
  }

  /** Schedule one chunk (Float32 samples at `sampleRate`) at `ptsMs` of utterance `id`. */
  push(id, ptsMs, samples, sampleRate) {
    const u = this.begin(id, sampleRate);
    if (u.stopped || samples.length === 0) return null;
    const ctx = this.ctx;
    const now = ctx.currentTime;
    if (u.startCtx === null) {
      // A queued utterance starts where the previous one's audio ends: no gap, no overlap.
      const earliest = Math.max(now + JITTER_BUFFER_S, this.lastEndCtx);
      u.startCtx = earliest - ptsMs / 1000;
      u.firstChunkCtx = earliest;
    }
    let when = u.startCtx + ptsMs / 1000;
    if (when < now + MIN_LEAD_S) {
      // Underrun: the chunk came late. Slide the whole utterance timeline; the mouth reads the
      // same startCtx, so it slides with the sound and stays in sync.
      const shift = now + MIN_LEAD_S + 0.02 - when;
      u.startCtx += shift;
      when += shift;
      u.underruns += 1;
    }
    const buf = ctx.createBuffer(1, samples.length, sampleRate);
    buf.copyToChannel(samples, 0);
    const src = ctx.createBufferSource();
    src.buffer = buf;
    src.connect(u.gain);
    src.start(when);
    u.sources.push(src);
    src.onended = () => {
      const i = u.sources.indexOf(src);
      if (i >= 0) u.sources.splice(i, 1);
    };
    const end = when + buf.duration;
    if (u.schedule.length < 20000) u.schedule.push([when, end]);
    u.endCtx = Math.max(u.endCtx ?? 0, end);
    this.lastEndCtx = Math.max(this.lastEndCtx, end);
    return when;
  }

  /** Position (ms) on utterance `id`'s timeline of the sample heard now (null if unscheduled). */
  ptsHeard(id, nowMs = performance.now()) {
    const u = this.utterances.get(id);
    if (!u || u.startCtx === null) return null;
    return (this.heardTime(nowMs) - u.startCtx) * 1000;
  }

  /** Barge-in: fade utterance `id` out over `rampMs` and drop what is scheduled after it. */
  fadeOut(id, rampMs = 150) {
    const u = this.utterances.get(id);
    if (!u || u.stopped) return;
    u.stopped = true;
    const now = this.ctx.currentTime;
    const end = now + rampMs / 1000;
    u.gain.gain.cancelScheduledValues(now);
    u.gain.gain.setValueAtTime(u.gain.gain.value, now);
    u.gain.gain.linearRampToValueAtTime(0, end);
    for (const s of u.sources) {
      try {
        s.stop(end + 0.01);
      } catch {
        // a source that has not started yet cannot be stopped before its start on old engines
      }
    }
    u.endCtx = Math.min(u.endCtx ?? end, end);
    // Whatever comes next starts after the fade, not after the cancelled audio.
    this.lastEndCtx = Math.min(this.lastEndCtx, end);
  }

  forget(id) {
    const u = this.utterances.get(id);
    if (u) u.gain.disconnect();
    this.utterances.delete(id);
  }

  /** This player is done (its session closed): fade out what still plays, then disconnect. */
  close(rampMs = 60) {
    if (this.closed) return;
    this.closed = true;
    for (const id of this.utterances.keys()) this.fadeOut(id, rampMs);
    setTimeout(() => this.master.disconnect(), rampMs + 50);
  }
}
