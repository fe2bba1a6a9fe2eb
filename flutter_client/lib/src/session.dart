// One live session over lipcore's WebSocket: decode messages, play audio, keep each
// utterance's viseme track, sync clocks, and answer "what does the mouth look like now".

import 'dart:async';
import 'dart:typed_data';
import 'dart:ui' as ui;

import 'package:flutter/foundation.dart';
import 'package:web_socket_channel/web_socket_channel.dart';

import 'audio.dart';
import 'protocol.dart';
import 'timeline.dart';

/// The mouth at one instant: weights, the utterance heard, and its audio clock.
typedef MouthState = ({Weights weights, int? utterance, double? ptsMs});

/// A decoded mouth patch (variant C), ready to paint: its image and box in photo pixels.
class PatchImage {
  PatchImage(this.image, {required this.x, required this.y, required this.w, required this.h,
      required this.seq});

  final ui.Image image;
  final int x;
  final int y;
  final int w;
  final int h;

  /// Its number among the session's patches (a new one means: repaint).
  final int seq;

  void dispose() => image.dispose();
}

/// Something that happened in the session (for logs, readouts and tests).
typedef SessionEvent = ({String type, Map<String, Object?> fields});

class LipcoreSession {
  /// [clock] is the client clock of ping/pong and the latency readouts (tests pass a fake).
  /// [recreate], when given, makes a new session (POST /session-2d again) and returns its
  /// `ws_url`: when the connection is lost for good ([recreateCodes]: its worker was killed or
  /// restarts), the session is re-created (on a live worker, behind a balancer) and a sentence
  /// that was cut before it was heard is said again.
  LipcoreSession(this.wsUrl,
      {AudioPlayer? audio,
      this.pingEvery = const Duration(seconds: 2),
      Stopwatch? clock,
      this.recreate})
      : audio = audio ?? AudioPlayer(),
        _since = clock ?? (Stopwatch()..start());

  static const double bargeInRampMs = 150;

  /// Close codes after which a new session is made (docs/deploy.md): 1006 dropped (a killed
  /// worker), 1001/1012 going away / restart (a drained worker), 1011, 4404 unknown, 4410
  /// expired, 4421 another worker's session.
  static const Set<int> recreateCodes = <int>{1001, 1006, 1011, 1012, 4404, 4410, 4421};
  static const int _recreateTries = 6;

  Uri wsUrl;
  final AudioPlayer audio;
  final Duration pingEvery;
  final Future<Uri> Function()? recreate;
  ClockSync clock = ClockSync();
  // The text last spoken from here until its utterance is heard to the end (said again after
  // a recovery): the next utterance_start after the speak is its utterance.
  String? _unfinished;
  int? _unfinishedId;
  bool _awaitingStart = false;
  bool _recovering = false;
  bool _closed = false;
  final Stopwatch _since;

  final Map<int, VisemeTrack> _tracks = <int, VisemeTrack>{};
  final Map<int, PatchTimeline<PatchImage>> _patches = <int, PatchTimeline<PatchImage>>{};
  int _patchSeq = 0;
  final Set<int> _patchLogged = <int>{};
  PatchImage? _patch;
  final List<int> _order = <int>[];
  final Map<int, int> _rates = <int, int>{};

  /// How close to its duration an utterance's clock counts as at its end (sample rounding).
  static const double _endToleranceMs = 5;
  final StreamController<SessionEvent> _events = StreamController<SessionEvent>.broadcast();
  WebSocketChannel? _channel;
  StreamSubscription<Object?>? _sub;
  Timer? _pinger;
  int _pingId = 0;
  int? _current;
  Hello? hello;

  /// Every event: hello, utterance_start, first_audio, stopped, error, closed, …
  Stream<SessionEvent> get events => _events.stream;

  /// Variant C: the server-rendered mouth due at the last [mouthNow] (null: the idle mouth).
  PatchImage? get patch => _patch;

  /// The utterance the server started last.
  int? get currentUtterance => _current;

  /// Whether something is being said: an utterance heard now or waiting for its audio (a new
  /// sentence spoken now should barge in rather than queue behind it).
  bool get isSpeaking => _order.any((id) {
        final track = _tracks[id];
        if (track == null || track.stoppedAt != null) return false;
        final pts = _ptsOf(id);
        return pts == null || !track.finishedAt(pts);
      });

  /// Position (ms) on utterance [id]'s timeline heard now. After its last sample the device
  /// plays nothing and the audio clock stands still (as in any underrun); once the utterance
  /// has ended that is silence, not a stall, so its timeline goes on in real time and the
  /// mouth finishes closing.
  double? _ptsOf(int id) {
    final pts = audio.ptsHeard(id);
    final end = _tracks[id]?.endMs;
    if (pts == null || end == null || pts < end - _endToleranceMs) return pts;
    return audio.ptsHeard(id, pastEnd: true);
  }

  double get _nowMs => _since.elapsedMicroseconds / 1000;

  void _log(String type, [Map<String, Object?> fields = const <String, Object?>{}]) {
    if (!_events.isClosed) _events.add((type: type, fields: fields));
  }

  /// Connect and wait for `hello`.
  Future<Hello> connect() async {
    // visemes=inline: each audio chunk's frames in the same binary message as its sound
    // (one message per chunk instead of two; docs/protocol.md).
    final url = wsUrl.queryParameters.containsKey('visemes')
        ? wsUrl
        : wsUrl.replace(queryParameters: <String, String>{
            ...wsUrl.queryParameters,
            'visemes': 'inline',
          });
    final channel = WebSocketChannel.connect(url);
    _channel = channel;
    await channel.ready;
    final greeted = Completer<Hello>();
    _sub = channel.stream.listen(
      (Object? data) {
        try {
          if (data is String) {
            final msg = ServerMessage.decode(data, classes: hello?.classes ?? defaultClasses);
            _onMessage(msg);
            if (msg is Hello && !greeted.isCompleted) greeted.complete(msg);
          } else if (data is List<int>) {
            unawaited(_onBinary(data is Uint8List ? data : Uint8List.fromList(data)));
          }
        } on ProtocolException catch (e) {
          _log('protocol_error', <String, Object?>{'message': e.message});
        }
      },
      onDone: () {
        _pinger?.cancel();
        _log('closed', <String, Object?>{'code': channel.closeCode});
        // No close frame at all (the peer vanished) is 1006, "abnormal closure".
        final code = channel.closeCode ?? 1006;
        if (!greeted.isCompleted) {
          greeted.completeError(
              StateError('connection closed (${channel.closeCode}) before hello'));
        } else if (identical(_channel, channel) &&
            !_closed &&
            recreate != null &&
            recreateCodes.contains(code)) {
          unawaited(_recover(code));
        }
      },
      onError: (Object e) => _log('ws_error', <String, Object?>{'error': '$e'}),
    );
    return greeted.future;
  }

  void _send(ClientMessage m) => _channel?.sink.add(m.encode());

  /// The session was lost: make a new one, connect, and say again what was cut. A few tries
  /// with a growing pause (a balancer may need a moment to notice a dead worker).
  Future<void> _recover(int code) async {
    final make = recreate;
    if (_recovering || make == null) return;
    _recovering = true;
    final t0 = _nowMs;
    final again = _unfinished;
    _log('recovering', <String, Object?>{'code': code, 'unfinished': again != null});
    // The new session numbers its utterances from 1 again: nothing of the old one may stay.
    for (final id in List<int>.of(_order)) {
      _stopUtterance(id, 0, 'lost');
      _forget(id);
    }
    clock = ClockSync();
    _current = null;
    _unfinishedId = null;
    _awaitingStart = false;
    var delay = 50;
    try {
      for (var attempt = 1; attempt <= _recreateTries && !_closed; attempt++) {
        try {
          wsUrl = await make();
          await _sub?.cancel();
          await connect();
          _log('recovered', <String, Object?>{'after_ms': _nowMs - t0, 'attempt': attempt});
          if (again != null) speak(again);
          return;
        } on Object catch (e) {
          _log('recover_failed', <String, Object?>{'attempt': attempt, 'message': '$e'});
          await Future<void>.delayed(Duration(milliseconds: delay));
          delay = delay * 2 > 1000 ? 1000 : delay * 2;
        }
      }
      _log('lost', <String, Object?>{'code': code});
    } finally {
      _recovering = false;
    }
  }

  void ping() => _send(Ping(id: ++_pingId, clientTimeMs: _nowMs));

  /// Speak [text]; with [bargeIn] it replaces whatever plays.
  void speak(String text, {bool bargeIn = false}) {
    _log('speak', <String, Object?>{'text': text, 'barge_in': bargeIn});
    _unfinished = text;
    _unfinishedId = null;
    _awaitingStart = true;
    // A barge-in cuts what plays now, not a round trip later; the server's stop that follows
    // finds these utterances already stopped.
    if (bargeIn) {
      for (final id in List<int>.of(_order)) {
        _stopUtterance(id, bargeInRampMs, 'client');
      }
    }
    _send(Speak(text, bargeIn: bargeIn));
  }

  /// Stream text (LLM tokens) into the current turn; [endTurn] flushes it.
  void textDelta(String delta) => _send(TextDelta(delta));
  void endTurn() => _send(const TextEnd());

  /// Barge-in from this side: ramp the mouth and fade the audio now, then tell the server.
  void stop() {
    _unfinished = null; // stopped on purpose: nothing to say again
    _awaitingStart = false;
    for (final id in List<int>.of(_order)) {
      _stopUtterance(id, bargeInRampMs, 'client');
    }
    _send(const StopRequest());
  }

  void _onMessage(ServerMessage msg) {
    switch (msg) {
      case final Hello h:
        hello = h;
        _log('hello', <String, Object?>{'session_id': h.sessionId, 'resumed': h.resumed});
        ping();
        _pinger?.cancel();
        _pinger = Timer.periodic(pingEvery, (_) => ping());
      case final Pong p:
        final s = clock.onPong(p, _nowMs);
        if (s != null) {
          _log('pong', <String, Object?>{'rtt_ms': s.rttMs, 'offset_ms': s.offsetMs});
        }
      case UtteranceStart(
          :final utterance,
          :final text,
          :final sampleRate,
          :final serverTimeMs,
        ):
        _rates[utterance] = sampleRate;
        _tracks.putIfAbsent(utterance, () {
          _order.add(utterance);
          return VisemeTrack(utterance);
        });
        _patches.putIfAbsent(utterance, PatchTimeline<PatchImage>.new);
        _current = utterance;
        if (_awaitingStart) {
          _awaitingStart = false;
          _unfinishedId = utterance;
        }
        // The server's stamp put on our clock by ping/pong: the one-way delay server → here.
        final oneWay = clock.best != null && serverTimeMs != null
            ? clock.toServer(_nowMs) - serverTimeMs
            : null;
        _log('utterance_start', <String, Object?>{
          'utterance': utterance, 'text': text, 'server_to_client_ms': oneWay});
      case VisemeMessage(:final utterance, :final frame):
        _tracks[utterance]?.addAll(<VisemeFrame>[frame]);
      case VisemesMessage(:final utterance, :final frames, :final provisional):
        _tracks[utterance]?.addAll(frames, provisional: provisional);
      case UtteranceEnd(:final utterance, :final durationMs):
        _tracks[utterance]?.end(durationMs);
        _patches[utterance]?.end(durationMs);
        _log('utterance_end', <String, Object?>{'utterance': utterance});
      case StopMessage(:final utterance, :final rampMs, :final reason):
        // The server's last word on its utterance: also after our own stop (a confirmation)
        // or after utterance_end (we may still be playing it).
        _log('stop_received', <String, Object?>{'utterance': utterance, 'reason': reason});
        _stopUtterance(utterance, rampMs, 'server');
      case ErrorMessage(:final code, :final message):
        _log('error', <String, Object?>{'code': code, 'message': message});
    }
  }

  Future<void> _onBinary(Uint8List bytes) async {
    final frame = BinaryFrame.decode(bytes);
    if (frame.kind == kindPatch) return _onPatch(bytes);
    if (!frame.isAudio) return;
    final event = frame.visemesJson;
    if (event != null) {
      // visemes=inline: the chunk's frames ride in front of its audio.
      _onMessage(ServerMessage.decode(event, classes: hello?.classes ?? defaultClasses));
    }
    final track = _tracks[frame.utterance];
    if (track == null || track.stoppedAt != null) return;
    final first = audio.ptsHeard(frame.utterance) == null;
    final rate = _rates[frame.utterance] ?? hello?.sampleRate ?? 22050;
    await audio.push(frame.utterance, frame.ptsMs, frame.samples(), rate);
    if (first) _log('first_audio', <String, Object?>{'utterance': frame.utterance});
  }

  /// A mouth patch (variant C): decode its image and file it on its utterance's timeline; the
  /// painter shows the one due at the audio clock.
  Future<void> _onPatch(Uint8List bytes) async {
    final p = PatchFrame.decode(bytes);
    final timeline = _patches[p.utterance];
    final track = _tracks[p.utterance];
    if (timeline == null || track == null || track.stoppedAt != null) return;
    final seq = ++_patchSeq;
    final ui.Image image;
    try {
      final codec = await ui.instantiateImageCodec(p.image);
      image = (await codec.getNextFrame()).image;
      codec.dispose();
    } on Exception catch (e) {
      _log('patch_error', <String, Object?>{'utterance': p.utterance, 'error': '$e'});
      return;
    }
    // Stopped or forgotten while the image decoded: nothing of it is shown.
    if (!identical(_patches[p.utterance], timeline) || timeline.stopMs != null) {
      image.dispose();
      return;
    }
    final item = PatchImage(image, x: p.x, y: p.y, w: p.w, h: p.h, seq: seq);
    timeline.add(p.ptsMs, item)?.dispose();
    if (_patchLogged.add(p.utterance)) {
      _log('first_patch', <String, Object?>{'utterance': p.utterance, 'pts_ms': p.ptsMs});
    }
  }

  void _stopUtterance(int id, double rampMs, String by) {
    final track = _tracks[id];
    if (track == null || track.stoppedAt != null) return;
    final pts = _ptsOf(id);
    _patches[id]?.stop(pts == null || pts < 0 ? 0.0 : pts);
    track.stop(pts == null || pts < 0 ? 0.0 : pts, rampMs: rampMs);
    audio.fadeOut(id, rampMs: rampMs);
    _log('stopped', <String, Object?>{'utterance': id, 'by': by, 'at_pts_ms': pts});
  }

  /// The mouth for the frame about to be shown, [displayDelayMs] from now.
  MouthState mouthNow({double displayDelayMs = 16.7}) {
    int? chosen;
    double? chosenPts;
    for (final id in _order) {
      final pts = _ptsOf(id);
      if (pts == null) continue;
      final t = pts + displayDelayMs;
      if (t >= -VisemeTrack.easeInMs) {
        chosen = id;
        chosenPts = t;
      }
    }
    if (chosen == null || chosenPts == null) {
      _patch = null;
      return (weights: const <String, double>{}, utterance: null, ptsMs: null);
    }
    final track = _tracks[chosen]!;
    final weights = track.weightsAt(chosenPts);
    // Variant C: the patch due now; the clock only moves on, so older ones are released.
    final timeline = _patches[chosen];
    _patch = timeline?.at(chosenPts)?.item;
    for (final old in timeline?.prune(chosenPts) ?? const <PatchImage>[]) {
      old.dispose();
    }
    if (track.finishedAt(chosenPts) && chosen != _current) _forget(chosen);
    return (weights: weights, utterance: chosen, ptsMs: chosenPts);
  }

  void _forget(int id) {
    if (id == _unfinishedId) {
      _unfinished = null; // heard to its end: nothing to say again
      _unfinishedId = null;
    }
    for (final old in _patches.remove(id)?.clear() ?? const <PatchImage>[]) {
      old.dispose();
    }
    _tracks.remove(id);
    _rates.remove(id);
    _order.remove(id);
    audio.forget(id);
  }

  /// Track of utterance [id] (tests and tools).
  @visibleForTesting
  VisemeTrack? trackOf(int id) => _tracks[id];

  /// Feed one text or binary frame as if it came from the socket (tests and tools).
  @visibleForTesting
  Future<void> handle(Object data) async {
    if (data is String) {
      _onMessage(ServerMessage.decode(data, classes: hello?.classes ?? defaultClasses));
    } else if (data is Uint8List) {
      await _onBinary(data);
    }
  }

  Future<void> close() async {
    _closed = true;
    _pinger?.cancel();
    for (final timeline in _patches.values) {
      for (final old in timeline.clear()) {
        old.dispose();
      }
    }
    _patches.clear();
    _patch = null;
    await _sub?.cancel();
    await _channel?.sink.close();
    await audio.dispose();
    await _events.close();
  }
}
