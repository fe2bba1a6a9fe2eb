// Audio: the utterances' PCM played gap-free, and the audio clock the mouth is drawn on.
//
// The clock is "frames the device has played": frames fed to the platform minus the frames it
// still holds (reported by the feed callback), advanced by a stopwatch between callbacks and
// never past what was fed (an underrun freezes the clock, and the mouth with it).

import 'dart:async';
import 'dart:math' as math;
import 'dart:typed_data';

import 'package:flutter_pcm_sound/flutter_pcm_sound.dart';

/// Where PCM goes. [PcmSoundSink] plays it; tests use a fake.
abstract interface class PcmSink {
  /// Prepare for mono s16 at [sampleRate]; [onFeed] is called with the frames still queued
  /// whenever the platform wants more.
  Future<void> setup(int sampleRate, void Function(int remainingFrames) onFeed);

  /// Queue [samples] for playback.
  Future<void> feed(Int16List samples);

  Future<void> release();
}

/// [PcmSink] on `flutter_pcm_sound` (Android, iOS, macOS).
class PcmSoundSink implements PcmSink {
  @override
  Future<void> setup(int sampleRate, void Function(int remainingFrames) onFeed) async {
    await FlutterPcmSound.setup(sampleRate: sampleRate, channelCount: 1);
    // Ask for more when less than 50 ms is queued: small enough for a quick barge-in fade,
    // large enough to ride over a busy UI frame.
    await FlutterPcmSound.setFeedThreshold(sampleRate ~/ 20);
    FlutterPcmSound.setFeedCallback(onFeed);
  }

  @override
  Future<void> feed(Int16List samples) =>
      FlutterPcmSound.feed(PcmArrayInt16.fromList(samples));

  @override
  Future<void> release() => FlutterPcmSound.release();
}

class _Utterance {
  _Utterance(this.id, this.startFrame);

  final int id;

  /// Device frame at which this utterance's pts 0 plays.
  int startFrame;
  bool stopped = false;
}

/// Plays utterances in order, gap-free, and tells where the audio clock is on each one's
/// timeline.
class AudioPlayer {
  AudioPlayer({PcmSink? sink, this.outputLatencyMs = 0, Stopwatch? clock})
      : _sink = sink ?? PcmSoundSink(),
        _clock = clock ?? (Stopwatch()..start());

  final PcmSink _sink;
  final Stopwatch _clock;

  /// Latency from the platform's buffer to the speaker, if the platform reports one.
  final double outputLatencyMs;

  int? _sampleRate;
  final List<Int16List> _queue = <Int16List>[]; // not yet handed to the platform
  int _queuedFrames = 0;
  int _fedFrames = 0; // frames handed to the platform
  int _endFrame = 0; // frames fed + queued: where the next sample lands
  int _playedAtCallback = 0;
  int _callbackAtUs = 0;
  final Map<int, _Utterance> _utterances = <int, _Utterance>{};
  _Fade? _fade;

  /// Frames handed to the platform ahead of the play position (the rest waits here, where a
  /// barge-in can still fade it).
  int get _leadFrames => (_sampleRate ?? 22050) ~/ 10;

  int get sampleRate => _sampleRate ?? 0;

  Future<void> _ensure(int sampleRate) async {
    if (_sampleRate == sampleRate) return;
    if (_sampleRate != null) await _sink.release();
    _sampleRate = sampleRate;
    _queue.clear();
    _queuedFrames = _fedFrames = _endFrame = _playedAtCallback = 0;
    _callbackAtUs = _clock.elapsedMicroseconds;
    for (final u in _utterances.values) {
      u.startFrame = 0;
    }
    await _sink.setup(sampleRate, _onFeed);
  }

  /// Frames the device has played by now (estimated between feed callbacks). With [pastEnd]
  /// the estimate runs on past what was fed (silence after the last sample), else it stops
  /// there.
  double playedFrames({bool pastEnd = false}) {
    final rate = _sampleRate;
    if (rate == null) return 0;
    final sinceUs = _clock.elapsedMicroseconds - _callbackAtUs;
    final est = _playedAtCallback + sinceUs * rate / 1e6;
    return pastEnd ? est : math.min(est, _fedFrames.toDouble());
  }

  /// Position (ms) on utterance [id]'s timeline of the sample heard now; null if unknown.
  /// [pastEnd]: the utterance has ended, so time after its last sample still counts.
  double? ptsHeard(int id, {bool pastEnd = false}) {
    final u = _utterances[id];
    final rate = _sampleRate;
    if (u == null || rate == null) return null;
    return (playedFrames(pastEnd: pastEnd) - u.startFrame) * 1000 / rate - outputLatencyMs;
  }

  /// Queue one chunk of utterance [id] at [ptsMs] of its timeline.
  Future<void> push(int id, double ptsMs, Int16List samples, int sampleRate) async {
    await _ensure(sampleRate);
    var u = _utterances[id];
    if (u == null) {
      // A new utterance starts where the previous one's audio ends: no gap, no overlap.
      final start = math.max(_endFrame, playedFrames().ceil());
      u = _utterances[id] = _Utterance(id, start - (ptsMs * sampleRate / 1000).round());
      _padTo(start);
    }
    if (u.stopped || samples.isEmpty) return;
    final at = u.startFrame + (ptsMs * sampleRate / 1000).round();
    if (at > _endFrame) {
      _padTo(at); // a hole in the stream: silence keeps the timeline
    } else if (at < _endFrame) {
      // Late or overlapping chunk: drop what would replay, keep the rest on time.
      final skip = _endFrame - at;
      if (skip >= samples.length) return;
      samples = Int16List.sublistView(samples, skip);
    }
    _append(samples);
    await _pump();
  }

  void _padTo(int frame) {
    if (frame > _endFrame) _append(Int16List(frame - _endFrame));
  }

  void _append(Int16List samples) {
    _queue.add(samples);
    _queuedFrames += samples.length;
    _endFrame += samples.length;
  }

  void _onFeed(int remainingFrames) {
    _playedAtCallback = _fedFrames - remainingFrames;
    _callbackAtUs = _clock.elapsedMicroseconds;
    unawaited(_pump());
  }

  /// Hand the platform what keeps it [_leadFrames] ahead of the play position.
  Future<void> _pump() async {
    final want = playedFrames().floor() + _leadFrames - _fedFrames;
    if (want <= 0 || _queue.isEmpty) return;
    final out = Int16List(math.min(want, _queuedFrames));
    var n = 0;
    while (n < out.length) {
      final head = _queue.first;
      final take = math.min(head.length, out.length - n);
      out.setRange(n, n + take, head);
      if (take == head.length) {
        _queue.removeAt(0);
      } else {
        _queue[0] = Int16List.sublistView(head, take);
      }
      n += take;
    }
    _queuedFrames -= out.length;
    final fade = _fade;
    if (fade != null) {
      fade.apply(out, _fedFrames);
      if (_fedFrames + out.length >= fade.until) _fade = null;
    }
    _fedFrames += out.length;
    await _sink.feed(out);
  }

  /// Barge-in: fade utterance [id] out over [rampMs] and drop the rest of it. Audio already
  /// handed to the platform (at most ~100 ms) plays out; the fade starts on the next frame fed.
  void fadeOut(int id, {double rampMs = 150}) {
    final u = _utterances[id];
    final rate = _sampleRate;
    if (u == null || u.stopped || rate == null) return;
    u.stopped = true;
    final rampFrames = (rampMs * rate / 1000).round();
    // Keep only the ramp's worth of queued audio; everything after it is dropped.
    final keep = math.min(_queuedFrames, rampFrames);
    // Less audio left than the ramp: fade over what is left, so it ends at silence.
    _fade = _Fade(_fedFrames, math.max(1, keep), _fedFrames + keep);
    final kept = Int16List(keep);
    var n = 0;
    for (final chunk in _queue) {
      if (n >= keep) break;
      final take = math.min(chunk.length, keep - n);
      kept.setRange(n, n + take, chunk);
      n += take;
    }
    _queue
      ..clear()
      ..add(kept);
    _endFrame = _fedFrames + keep;
    _queuedFrames = keep;
  }

  void forget(int id) => _utterances.remove(id);

  Future<void> dispose() async {
    _queue.clear();
    await _sink.release();
  }
}

/// A linear fade to silence from device frame [start] over [frames]; frames from [until] on
/// belong to what comes next and are left alone.
class _Fade {
  _Fade(this.start, this.frames, this.until);

  final int start;
  final int frames;
  final int until;

  void apply(Int16List block, int firstFrame) {
    for (var i = 0; i < block.length; i++) {
      final f = firstFrame + i;
      if (f >= until) break;
      final k = frames <= 0 ? 0.0 : 1 - (f - start) / frames;
      block[i] = (block[i] * math.min(1.0, math.max(0.0, k))).round();
    }
  }
}
