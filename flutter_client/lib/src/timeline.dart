// The mouth on the audio timeline: viseme interpolation, the barge-in ramp, cross-fade cells,
// mesh offsets and ping/pong clock sync. Pure Dart, no Flutter: unit-tested directly.

import 'dart:math' as math;
import 'dart:typed_data';

import 'protocol.dart';

/// Index of the last of the increasing [pts] that is ≤ [t] (the caller ensures `pts[0] ≤ t`).
int _lastAtOrBefore(List<double> pts, double t) {
  var lo = 0;
  var hi = pts.length;
  while (hi - lo > 1) {
    final mid = (lo + hi) >> 1;
    if (pts[mid] <= t) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/// The sum of the non-Rest weights: 0 is the mouth at rest.
double activity(Weights weights) {
  var s = 0.0;
  weights.forEach((k, v) {
    if (k != rest) s += v;
  });
  return s;
}

/// Linear blend `(1 − a)·w0 + a·w1` (Rest implicit).
Weights mixWeights(Weights w0, Weights w1, double a) {
  final out = <String, double>{};
  for (final k in <String>{...w0.keys, ...w1.keys}) {
    if (k == rest) continue;
    final v = (1 - a) * (w0[k] ?? 0) + a * (w1[k] ?? 0);
    if (v > 0) out[k] = v;
  }
  return out;
}

/// Every class of [classes] present, with [rest] = 1 − Σ others.
Weights withRest(Weights weights, {List<String> classes = defaultClasses}) {
  final out = <String, double>{};
  var sum = 0.0;
  for (final c in classes) {
    if (c == rest) continue;
    final w = math.min(1.0, math.max(0.0, weights[c] ?? 0.0));
    out[c] = w;
    sum += w;
  }
  if (sum > 1) {
    for (final c in out.keys.toList()) {
      out[c] = out[c]! / sum;
    }
  }
  out[rest] = math.max(0.0, 1.0 - math.min(1.0, sum));
  return out;
}

/// One atlas cell to draw and its share of the cross-fade.
typedef Cell = ({String cls, double weight});

/// The [n] highest-weighted classes (Rest included as the remainder), renormalised to sum
/// to 1: what the sprite overlay cross-fades. Ties break by class order.
List<Cell> topCells(Weights weights, {int n = 3, List<String> classes = defaultClasses}) {
  final full = withRest(weights, classes: classes);
  final ranked = <(int, String, double)>[
    for (final (i, c) in classes.indexed)
      if ((full[c] ?? 0) > 1e-4) (i, c, full[c]!),
  ]..sort((a, b) {
      final byWeight = b.$3.compareTo(a.$3);
      return byWeight != 0 ? byWeight : a.$1.compareTo(b.$1);
    });
  final top = ranked.take(n).toList();
  final total = top.fold<double>(0, (s, e) => s + e.$3);
  if (total <= 0) return const <Cell>[(cls: rest, weight: 1.0)];
  return <Cell>[for (final e in top) (cls: e.$2, weight: e.$3 / total)];
}

/// Smoothstep over [0, 1]: the ramp's shape (no jump in speed at either end).
double smoothstep(double x) {
  final t = math.min(1.0, math.max(0.0, x));
  return t * t * (3 - 2 * t);
}

/// [from] scaled toward Rest, [elapsedMs] into a [rampMs] ramp.
Weights rampToRest(Weights from, double elapsedMs, double rampMs) {
  final k = rampMs <= 0 ? 0.0 : 1 - smoothstep(elapsedMs / rampMs);
  return <String, double>{
    for (final MapEntry(:key, :value) in from.entries)
      if (key != rest && value * k > 0) key: value * k,
  };
}

/// Where a barge-in stopped an utterance and the shape it ramps from.
typedef StopPoint = ({double ptsMs, double rampMs, Weights from});

/// The viseme track of one utterance, sampled at any time on its audio timeline.
///
/// Before the first frame the mouth eases in from Rest over [easeInMs]; between the last frame
/// received and the end it holds the last frame (the stream has not caught up yet); after the
/// end, or after a barge-in, it ramps to Rest.
class VisemeTrack {
  VisemeTrack(this.utterance);

  static const double easeInMs = 40;
  static const double closeMs = 100;

  final int utterance;
  final List<double> _pts = <double>[];
  final List<Weights> _weights = <Weights>[];
  double? _endMs;
  StopPoint? _stop;

  List<double> get pts => List<double>.unmodifiable(_pts);
  double? get endMs => _endMs;
  StopPoint? get stoppedAt => _stop;

  /// pts of provisional frames no final frame has replaced yet.
  final Set<double> _guessed = <double>{};

  /// How many provisional frames are still waiting for their final frame.
  int get provisionalCount => _guessed.length;

  /// Add frames; late ones are inserted in order. [provisional] frames (a `visemes` event with
  /// `provisional: true`) are the server's guess before the look-ahead arrived: a frame with
  /// the same pts replaces them; any other duplicate is dropped.
  void addAll(Iterable<VisemeFrame> frames, {bool provisional = false}) {
    for (final f in frames) {
      if (_pts.isEmpty || f.ptsMs > _pts.last) {
        _pts.add(f.ptsMs);
        _weights.add(f.weights);
      } else {
        final i = _pts.indexWhere((p) => p >= f.ptsMs);
        if (_pts[i] == f.ptsMs) {
          if (!_guessed.contains(f.ptsMs)) continue;
          _weights[i] = f.weights;
        } else {
          _pts.insert(i, f.ptsMs);
          _weights.insert(i, f.weights);
        }
      }
      if (provisional) {
        _guessed.add(f.ptsMs);
      } else {
        _guessed.remove(f.ptsMs);
      }
    }
  }

  /// The utterance ended after [durationMs] of audio.
  void end(double durationMs) => _endMs = durationMs;

  /// Barge-in at [ptsMs]: ramp to Rest over [rampMs], clamped to the protocol's 100–200 ms.
  /// A second stop does not restart the ramp.
  void stop(double ptsMs, {double rampMs = 150}) {
    if (_stop != null) return;
    // The shape shown there, end ramp included (a stop after the end ramps from Rest).
    final from = weightsAt(ptsMs);
    _stop = (ptsMs: ptsMs, rampMs: math.min(200.0, math.max(100.0, rampMs)), from: from);
  }

  /// Linear interpolation of the received frames at [tMs].
  Weights sample(double tMs) {
    if (_pts.isEmpty) return const <String, double>{};
    if (tMs < _pts.first) {
      final a = 1 - (_pts.first - tMs) / easeInMs;
      return a <= 0 ? const <String, double>{} : mixWeights(const {}, _weights.first, a);
    }
    if (tMs >= _pts.last) return Map<String, double>.of(_weights.last);
    final lo = _lastAtOrBefore(_pts, tMs);
    final hi = lo + 1;
    final a = (tMs - _pts[lo]) / (_pts[hi] - _pts[lo]);
    return mixWeights(_weights[lo], _weights[hi], a);
  }

  /// The mouth at [tMs] on the audio timeline: frames, then the end or barge-in ramp.
  Weights weightsAt(double tMs) {
    final stop = _stop;
    if (stop != null) {
      if (tMs < stop.ptsMs) return sample(tMs);
      return rampToRest(stop.from, tMs - stop.ptsMs, stop.rampMs);
    }
    final end = _endMs;
    if (end != null && tMs >= end) {
      return rampToRest(sample(end), tMs - end, closeMs);
    }
    return sample(tMs);
  }

  /// True once the mouth at [tMs] is back at Rest for good.
  bool finishedAt(double tMs) {
    final stop = _stop;
    if (stop != null) return tMs >= stop.ptsMs + stop.rampMs;
    final end = _endMs;
    return end != null && tMs >= end + closeMs;
  }
}

/// One ping/pong measurement.
typedef ClockSample = ({double rttMs, double offsetMs});

/// The server's clock from ping/pong: of the last [window] samples, the one with the smallest
/// round trip is the least disturbed by queueing, and its offset is used.
class ClockSync {
  ClockSync({this.window = 8});

  final int window;
  final List<ClockSample> _samples = <ClockSample>[];

  /// Record a pong received at [nowMs] (the same clock as [Ping.clientTimeMs]).
  ClockSample? onPong(Pong pong, double nowMs) {
    final rtt = nowMs - pong.clientTimeMs;
    if (rtt < 0) return null;
    final sample = (rttMs: rtt, offsetMs: pong.serverTimeMs - (pong.clientTimeMs + rtt / 2));
    _samples.add(sample);
    if (_samples.length > window) _samples.removeAt(0);
    return sample;
  }

  ClockSample? get best => _samples.isEmpty
      ? null
      : _samples.reduce((a, b) => b.rttMs < a.rttMs ? b : a);

  /// Server minus client clock in ms (0 before the first pong).
  double get offsetMs => best?.offsetMs ?? 0;

  double? get rttMs => best?.rttMs;

  double toServer(double clientMs) => clientMs + offsetMs;
}

/// Σ w·targets[class] of a meshdef: `[dx0, dy0, dx1, dy1, …]` in ROI pixels.
Float32List blendMeshOffsets(
    Map<String, List<List<double>>> targets, int points, Weights weights) {
  final out = Float32List(2 * points);
  weights.forEach((cls, w) {
    final t = targets[cls];
    if (cls == rest || w <= 0 || t == null) return;
    for (var i = 0; i < points; i++) {
      out[2 * i] += w * t[i][0];
      out[2 * i + 1] += w * t[i][1];
    }
  });
  return out;
}

/// Idle frame index shown at [mediaTimeS] of a loop of [frames] at [fps].
int frameIndexAt(double mediaTimeS, double fps, int frames) {
  final i = (mediaTimeS * fps + 1e-3).floor();
  return ((i % frames) + frames) % frames;
}

// --------------------------------------------------------------------------- mouth patches

/// The mouth patches (variant C) of one utterance on its audio timeline. At audio clock `t`
/// the latest patch with `pts ≤ t` is shown; none before the first patch, none from the end of
/// the utterance's audio or from a barge-in on (the idle loop's own mouth then). Between the
/// last patch received and the end the last one holds (the stream is catching up). What [add]
/// replaces and [prune] drops is returned so the caller can dispose of its images.
class PatchTimeline<T> {
  final List<double> _pts = <double>[];
  final List<T> _items = <T>[];

  /// End of the utterance's audio (utterance_end), once known.
  double? endMs;

  /// Where a barge-in stopped it, if one did.
  double? stopMs;

  int get length => _pts.length;

  /// Add a patch; returns the item it replaced (the same pts), else null.
  T? add(double ptsMs, T item) {
    if (_pts.isEmpty || ptsMs > _pts.last) {
      _pts.add(ptsMs);
      _items.add(item);
      return null;
    }
    final i = _pts.indexWhere((p) => p >= ptsMs);
    if (_pts[i] == ptsMs) {
      final old = _items[i];
      _items[i] = item;
      return old;
    }
    _pts.insert(i, ptsMs);
    _items.insert(i, item);
    return null;
  }

  void end(double durationMs) => endMs = durationMs;

  void stop(double ptsMs) => stopMs ??= ptsMs;

  int _indexAt(double tMs) {
    if (stopMs != null && tMs >= stopMs!) return -1;
    if (endMs != null && tMs >= endMs!) return -1;
    if (_pts.isEmpty || tMs < _pts.first) return -1;
    return _lastAtOrBefore(_pts, tMs);
  }

  /// The patch to show at [tMs], or null for the idle mouth.
  ({double ptsMs, T item})? at(double tMs) {
    final i = _indexAt(tMs);
    return i < 0 ? null : (ptsMs: _pts[i], item: _items[i]);
  }

  /// True once nothing more will be shown after [tMs].
  bool finishedAt(double tMs) =>
      tMs >= math.min(stopMs ?? double.infinity, endMs ?? double.infinity);

  /// Drop the patches before the one shown at [tMs] (the clock only moves on); returns them.
  List<T> prune(double tMs) {
    final i = _indexAt(tMs);
    final k = i < 0 ? (finishedAt(tMs) ? _pts.length : 0) : i;
    if (k == 0) return <T>[];
    _pts.removeRange(0, k);
    final dropped = _items.sublist(0, k);
    _items.removeRange(0, k);
    return dropped;
  }

  /// Drop everything (the utterance is forgotten); returns the items.
  List<T> clear() {
    _pts.clear();
    final all = List<T>.of(_items);
    _items.clear();
    return all;
  }
}
