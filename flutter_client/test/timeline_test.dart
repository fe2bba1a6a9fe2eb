import 'package:flutter_test/flutter_test.dart';
import 'package:lipcore_client/lipcore_client.dart';

VisemeTrack _track() => VisemeTrack(1)
  ..addAll(const <VisemeFrame>[
    VisemeFrame(0, <String, double>{}),
    VisemeFrame(40, <String, double>{'AI': 1}),
    VisemeFrame(80, <String, double>{'MBP': 0.8, 'O': 0.2}),
  ]);

void main() {
  test('weights interpolate linearly on the audio timeline', () {
    final t = _track();
    expect(t.weightsAt(0), isEmpty);
    expect(t.weightsAt(20)['AI'], closeTo(0.5, 1e-9));
    final w = t.weightsAt(60);
    expect(w['AI'], closeTo(0.5, 1e-9));
    expect(w['MBP'], closeTo(0.4, 1e-9));
    expect(w['O'], closeTo(0.1, 1e-9));
    // Past the last frame received, the last shape holds until the stream catches up.
    expect(t.weightsAt(500), <String, double>{'MBP': 0.8, 'O': 0.2});
  });

  test('Rest is the remainder and the total is 1', () {
    final t = _track();
    for (var ms = -50.0; ms < 200; ms += 3.7) {
      final sum = withRest(t.weightsAt(ms)).values.fold<double>(0, (a, b) => a + b);
      expect(sum, closeTo(1, 1e-9), reason: 't=$ms');
    }
  });

  test('after utterance_end the mouth closes within 100 ms', () {
    final t = _track()..end(100);
    expect(activity(t.weightsAt(100)), greaterThan(0.9));
    expect(activity(t.weightsAt(150)), lessThan(activity(t.weightsAt(100))));
    expect(t.weightsAt(200), isEmpty);
    expect(t.finishedAt(200), isTrue);
    expect(t.finishedAt(150), isFalse);
  });

  test('final frames replace provisional ones with the same pts; finals are never replaced', () {
    final t = VisemeTrack(1)
      ..addAll(const <VisemeFrame>[
        VisemeFrame(0, <String, double>{'AI': 0.3}),
        VisemeFrame(33, <String, double>{'AI': 0.5}),
      ], provisional: true)
      ..addAll(const <VisemeFrame>[
        VisemeFrame(33, <String, double>{'AI': 0.7}),
        VisemeFrame(66, <String, double>{'O': 0.4}),
      ], provisional: true);
    expect(t.pts, <double>[0, 33, 66]);
    expect(t.weightsAt(33)['AI'], 0.7);
    expect(t.provisionalCount, 3);
    t.addAll(const <VisemeFrame>[
      VisemeFrame(0, <String, double>{'AI': 0.2}),
      VisemeFrame(33, <String, double>{'E': 0.6}),
    ]);
    expect(t.weightsAt(33), <String, double>{'E': 0.6});
    expect(t.provisionalCount, 1);
    t
      ..addAll(const <VisemeFrame>[VisemeFrame(33, <String, double>{'U': 1})], provisional: true)
      ..addAll(const <VisemeFrame>[VisemeFrame(33, <String, double>{'U': 1})]);
    expect(t.weightsAt(33), <String, double>{'E': 0.6});
    t.addAll(const <VisemeFrame>[
      VisemeFrame(66, <String, double>{'MBP': 1}),
      VisemeFrame(100, <String, double>{}),
    ]);
    expect(t.pts, <double>[0, 33, 66, 100]);
    expect(t.weightsAt(66), <String, double>{'MBP': 1});
    expect(t.provisionalCount, 0);
  });

  test('barge-in ramps to Rest monotonically within 100–200 ms', () {
    final t = VisemeTrack(1)
      ..addAll(const <VisemeFrame>[
        VisemeFrame(0, <String, double>{'AI': 1}),
        VisemeFrame(1000, <String, double>{'AI': 1}),
      ])
      ..stop(300, rampMs: 150);
    var prev = 1.0;
    for (var ms = 300.0; ms <= 450; ms += 10) {
      final a = activity(t.weightsAt(ms));
      expect(a, lessThanOrEqualTo(prev + 1e-12));
      prev = a;
    }
    expect(activity(t.weightsAt(450)), 0);
    expect(rampToRest(const <String, double>{'AI': 0.8}, 75, 150)['AI'], closeTo(0.4, 1e-9));
    final short = VisemeTrack(2)
      ..addAll(const <VisemeFrame>[VisemeFrame(0, <String, double>{'O': 1})])
      ..stop(0, rampMs: 20);
    expect(short.stoppedAt!.rampMs, 100);
    short.stop(500);
    expect(short.stoppedAt!.ptsMs, 0);
  });

  test('a stop after the utterance ended does not reopen the mouth', () {
    final t = VisemeTrack(1)
      ..addAll(const <VisemeFrame>[
        VisemeFrame(0, <String, double>{'AI': 1}),
        VisemeFrame(300, <String, double>{'AI': 1}),
      ])
      ..end(300);
    expect(activity(t.weightsAt(400)), 0);
    t.stop(400);
    for (var ms = 400.0; ms <= 600; ms += 10) {
      expect(activity(t.weightsAt(ms)), 0);
    }
  });

  test('the first shape eases in instead of popping', () {
    final t = VisemeTrack(1)
      ..addAll(const <VisemeFrame>[VisemeFrame(100, <String, double>{'AI': 1})]);
    expect(t.weightsAt(50), isEmpty);
    expect(t.weightsAt(80)['AI'], closeTo(0.5, 1e-9));
  });

  test('topCells picks the highest weights, Rest included', () {
    final cells = topCells(const <String, double>{'AI': 0.5, 'O': 0.3, 'MBP': 0.1});
    expect(cells.map((c) => c.cls), <String>['AI', 'O', 'MBP']);
    expect(cells.fold<double>(0, (s, c) => s + c.weight), closeTo(1, 1e-9));
    expect(topCells(const <String, double>{}).single.cls, rest);
    expect(topCells(const <String, double>{'AI': 0.2}, n: 2).first.cls, rest);
  });

  test('clock sync keeps the pong with the smallest round trip', () {
    final c = ClockSync();
    expect(c.offsetMs, 0);
    c
      ..onPong(const Pong(id: 1, clientTimeMs: 0, serverTimeMs: 1090), 100)
      ..onPong(const Pong(id: 2, clientTimeMs: 200, serverTimeMs: 1205), 210);
    expect(c.rttMs, 10);
    expect(c.offsetMs, 1000);
    expect(c.toServer(5), 1005);
  });

  test('mesh offsets blend by weight, Rest moves nothing', () {
    final targets = <String, List<List<double>>>{
      'AI': <List<double>>[<double>[0, 10], <double>[0, 20]],
      'O': <List<double>>[<double>[4, 0], <double>[-4, 0]],
    };
    expect(blendMeshOffsets(targets, 2, const <String, double>{'AI': 0.5, 'O': 0.25, 'Rest': 0.25}),
        <double>[1, 5, -1, 10]);
  });

  test('media time maps to the idle frame, wrapping the loop', () {
    expect(frameIndexAt(0, 25, 100), 0);
    expect(frameIndexAt(0.0399999, 25, 100), 1);
    expect(frameIndexAt(4, 25, 100), 0);
  });

  test('patches: the one due at the audio clock; idle before, after the end and on a stop', () {
    final t = PatchTimeline<int>();
    expect(t.at(0), isNull);
    for (final pts in <int>[40, 80, 120]) {
      expect(t.add(pts.toDouble(), pts), isNull);
    }
    expect(t.at(39.9), isNull);
    expect(t.at(40)!.item, 40);
    expect(t.at(79)!.item, 40);
    expect(t.at(500)!.item, 120); // the stream is catching up: the last one holds
    expect(t.add(60, 60), isNull); // a late patch slots in by pts
    expect(t.at(70)!.item, 60);
    expect(t.add(60, 61), 60); // the same pts replaces; the old item comes back
    t.end(130);
    expect(t.at(129)!.item, 120);
    expect(t.at(130), isNull);
    expect(t.finishedAt(130), isTrue);
  });

  test('patches: older ones are released as the clock passes them; a stop shows idle', () {
    final t = PatchTimeline<int>();
    for (final pts in <int>[0, 40, 80, 120, 160]) {
      t.add(pts.toDouble(), pts);
    }
    expect(t.prune(-5), isEmpty);
    expect(t.prune(85), <int>[0, 40]);
    expect(t.at(85)!.item, 80);
    expect(t.length, 3);
    t.stop(100);
    expect(t.at(99)!.item, 80);
    expect(t.at(100), isNull);
    expect(t.prune(100), <int>[80, 120, 160]);
    expect(t.length, 0);
  });
}
