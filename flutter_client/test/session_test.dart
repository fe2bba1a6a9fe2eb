import 'dart:convert';
import 'dart:typed_data';

import 'package:flutter_test/flutter_test.dart';
import 'package:lipcore_client/lipcore_client.dart';

/// A clock the test moves by hand.
class FakeStopwatch implements Stopwatch {
  int us = 0;

  @override
  int get elapsedMicroseconds => us;

  @override
  dynamic noSuchMethod(Invocation invocation) => null;
}

/// Records what would go to the speakers and reports the queue like the platform does.
class FakeSink implements PcmSink {
  final List<int> fed = <int>[];
  int? rate;
  void Function(int remainingFrames)? onFeed;

  @override
  Future<void> setup(int sampleRate, void Function(int remainingFrames) onFeed) async {
    rate = sampleRate;
    this.onFeed = onFeed;
  }

  @override
  Future<void> feed(Int16List samples) async => fed.addAll(samples);

  @override
  Future<void> release() async {}

  /// The device has played [played] frames in total.
  void report(int played) => onFeed!(fed.length - played);
}

Uint8List _audio(int utterance, double ptsMs, int n, {int value = 1000}) => BinaryFrame(
      kind: kindAudio,
      utterance: utterance,
      ptsMs: ptsMs,
      payload: Int16List.fromList(List<int>.filled(n, value)).buffer.asUint8List(),
    ).encode();

String _msg(Map<String, Object?> m) => jsonEncode(m);

void main() {
  const rate = 10000; // 10 frames per ms keeps the arithmetic readable

  late FakeStopwatch clock;
  late FakeSink sink;
  late LipcoreSession session;

  setUp(() async {
    clock = FakeStopwatch();
    sink = FakeSink();
    session = LipcoreSession(Uri.parse('ws://unused'),
        audio: AudioPlayer(sink: sink, clock: clock), clock: clock);
    await session.handle(_msg(<String, Object?>{
      'type': 'utterance_start', 'utterance': 1, 'sample_rate': rate, 'text': 'hi'}));
    await session.handle(_msg(<String, Object?>{
      'type': 'visemes', 'utterance': 1, 'frames': <Object?>[
        <String, Object?>{'pts_ms': 0, 'weights': <String, double>{}},
        <String, Object?>{'pts_ms': 100, 'weights': <String, double>{'AI': 1}},
        <String, Object?>{'pts_ms': 300, 'weights': <String, double>{'AI': 1}},
      ]}));
    await session.handle(_audio(1, 0, 3000)); // 300 ms
  });

  test('the mouth follows the audio played, not the arrival of messages', () {
    // Nothing played yet: the mouth is at pts 0 (+ display delay) → Rest.
    expect(activity(session.mouthNow(displayDelayMs: 0).weights), 0);
    // The device reports 50 ms played; 0 ms later the mouth is at 50 ms → AI 0.5.
    sink.report(500);
    expect(session.mouthNow(displayDelayMs: 0).weights['AI'], closeTo(0.5, 1e-6));
    // Between callbacks the clock advances with the stopwatch (25 ms → pts 75).
    clock.us += 25000;
    expect(session.mouthNow(displayDelayMs: 0).ptsMs, closeTo(75, 1e-6));
    // ... but never past what was handed to the platform (an underrun freezes the mouth).
    clock.us += 10 * 1000 * 1000;
    expect(session.audio.playedFrames(), sink.fed.length.toDouble());
  });

  test('audio is handed over gap-free and the next utterance starts where this one ends',
      () async {
    sink.report(0);
    await session.handle(_msg(<String, Object?>{
      'type': 'utterance_start', 'utterance': 2, 'sample_rate': rate}));
    await session.handle(_audio(2, 0, 1000, value: 7));
    // Feed everything: report the device caught up repeatedly.
    for (var played = 0; played < 4000; played += 500) {
      sink.report(played);
    }
    expect(sink.fed.length, 4000);
    expect(sink.fed.sublist(0, 3000).every((s) => s == 1000), isTrue);
    expect(sink.fed.sublist(3000).every((s) => s == 7), isTrue);
    expect(session.audio.ptsHeard(2), isNotNull);
  });

  test('barge-in ramps the mouth to rest and fades the audio', () async {
    await session.handle(_audio(1, 300, 3000)); // the utterance is 600 ms long
    sink
      ..report(500)
      ..report(1500); // 150 ms in, mouth open
    expect(activity(session.mouthNow(displayDelayMs: 0).weights), 1);
    session.stop();
    final track = session.trackOf(1)!;
    expect(track.stoppedAt!.ptsMs, closeTo(150, 1e-6));
    clock.us += 75000;
    final mid = activity(session.mouthNow(displayDelayMs: 0).weights);
    expect(mid, inExclusiveRange(0, 1));
    // Let the platform drain: the audio ends in silence, long before the utterance would have.
    for (var played = 1500; played <= sink.fed.length; played += 100) {
      sink.report(played);
    }
    expect(sink.fed.length, lessThan(6000));
    expect(sink.fed.last.abs(), lessThan(50));
    clock.us += 200000;
    expect(activity(session.mouthNow(displayDelayMs: 0).weights), 0);
  });

  test('a stopped utterance plays nothing more, whatever still arrives', () async {
    sink
      ..report(500)
      ..report(1500);
    session.stop();
    final first = session.trackOf(1)!.stoppedAt;
    await session.handle(_msg(<String, Object?>{
      'type': 'stop', 'utterance': 1, 'at_pts_ms': 300, 'ramp_ms': 150, 'reason': 'client'}));
    expect(session.trackOf(1)!.stoppedAt, same(first));
    for (var played = 1500; played <= sink.fed.length; played += 100) {
      sink.report(played);
    }
    final drained = sink.fed.length;
    await session.handle(_audio(1, 300, 1000));
    sink.report(drained);
    expect(sink.fed.length, drained);
  });

  test('isSpeaking: while the utterance is heard, not after its end or a stop', () async {
    expect(session.isSpeaking, isTrue); // queued audio, nothing heard yet
    sink.report(1500);
    expect(session.isSpeaking, isTrue);
    await session.handle(_msg(<String, Object?>{
      'type': 'utterance_end', 'utterance': 1, 'duration_ms': 300, 'reason': 'done'}));
    for (var played = 1500; played <= 3000; played += 500) {
      sink.report(played); // all 300 ms played; the mouth closes over the next 100 ms
    }
    clock.us += 150000;
    expect(session.isSpeaking, isFalse);
  });

  test('after the last sample the mouth still finishes closing', () async {
    // The stream ends on an open shape (no trailing silence): the device clock stops at the
    // last sample, the utterance's timeline must not.
    await session.handle(_msg(<String, Object?>{
      'type': 'utterance_end', 'utterance': 1, 'duration_ms': 300, 'reason': 'done'}));
    for (var played = 0; played <= 3000; played += 500) {
      sink.report(played);
    }
    expect(session.audio.ptsHeard(1), closeTo(300, 1e-6));
    expect(activity(session.mouthNow(displayDelayMs: 0).weights), greaterThan(0.9));
    clock.us += 120000;
    expect(activity(session.mouthNow(displayDelayMs: 0).weights), 0);
    expect(session.isSpeaking, isFalse);
  });

  test('speaking with barge-in cuts the current utterance at once; the server confirms',
      () async {
    final events = <SessionEvent>[];
    final sub = session.events.listen(events.add);
    sink
      ..report(500)
      ..report(1500); // 150 ms in, mouth open
    session.speak('next', bargeIn: true);
    // Cut here, before any round trip: the ramp starts at the heard position.
    expect(session.trackOf(1)!.stoppedAt!.ptsMs, closeTo(150, 1e-6));
    // The server had sent all of it (utterance_end), and still sends its stop.
    await session.handle(_msg(<String, Object?>{
      'type': 'utterance_end', 'utterance': 1, 'duration_ms': 300, 'reason': 'done'}));
    await session.handle(_msg(<String, Object?>{
      'type': 'stop', 'utterance': 1, 'at_pts_ms': 300, 'ramp_ms': 150, 'reason': 'barge_in'}));
    await Future<void>.delayed(Duration.zero);
    final types = events.map((e) => e.type).toList();
    expect(types, containsAllInOrder(<String>['speak', 'stopped', 'stop_received']));
    expect(events.firstWhere((e) => e.type == 'stopped').fields['by'], 'client');
    // The device plays out the faded tail; 200 ms later the mouth is at Rest.
    for (var played = 1500; played <= sink.fed.length; played += 100) {
      sink.report(played);
    }
    expect(sink.fed.last.abs(), lessThan(50));
    clock.us += 200000;
    expect(activity(session.mouthNow(displayDelayMs: 0).weights), 0);
    await sub.cancel();
  });

  test('ping/pong puts the server clock on ours: the one-way delay of a message', () async {
    final events = <SessionEvent>[];
    final sub = session.events.listen(events.add);
    // Server clock = ours + 5000 ms; the pong comes back 10 ms after the ping.
    clock.us = 10000;
    session.clock.onPong(const Pong(id: 1, clientTimeMs: 0, serverTimeMs: 5005), 10);
    expect(session.clock.offsetMs, closeTo(5000, 1e-9));
    // An utterance_start stamped by the server 30 ms ago (on its clock).
    clock.us = 100000;
    await session.handle(_msg(<String, Object?>{
      'type': 'utterance_start', 'utterance': 2, 'sample_rate': rate,
      'server_time_ms': 5000 + 100 - 30}));
    await Future<void>.delayed(Duration.zero);
    final start = events.lastWhere((e) => e.type == 'utterance_start');
    expect(start.fields['server_to_client_ms'] as double, closeTo(30, 1e-6));
    await sub.cancel();
  });
}
