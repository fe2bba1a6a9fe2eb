import 'dart:convert';
import 'dart:typed_data';

import 'package:flutter_test/flutter_test.dart';
import 'package:lipcore_client/lipcore_client.dart';

import 'vectors.dart';

void main() {
  final files = messageVectorFiles();

  test('vectors exist for every server and client message type', () {
    expect(files, isNotEmpty, reason: 'no vectors in ${vectorsDir().path}');
    final server = <String>{
      for (final f in files.where((f) => f.startsWith('server.'))) loadVector(f)['type']! as String,
    };
    final client = <String>{
      for (final f in files.where((f) => f.startsWith('client.'))) loadVector(f)['type']! as String,
    };
    expect(server, containsAll(<String>['hello', 'utterance_start', 'viseme', 'visemes',
        'utterance_end', 'stop', 'error', 'pong']));
    expect(client, containsAll(<String>['ping', 'speak', 'text_delta', 'text_end', 'stop']));
  });

  for (final file in files) {
    final vec = loadVector(file);
    final isServer = vec['direction'] == 'server_to_client';
    Object decode(Map<String, Object?> m) => isServer
        ? ServerMessage.decode(jsonEncode(m))
        : ClientMessage.decode(jsonEncode(m));

    group(file, () {
      for (final c in (vec['valid']! as List<Object?>).cast<Map<String, Object?>>()) {
        test('valid: ${c['name']}', () {
          final msg = decode(c['message']! as Map<String, Object?>);
          final type = msg is ServerMessage ? msg.type : (msg as ClientMessage).type;
          expect(type, vec['type']);
        });
      }
      for (final c in (vec['invalid']! as List<Object?>).cast<Map<String, Object?>>()) {
        test('invalid: ${c['name']} (${c['reason']})', () {
          expect(() => decode(c['message']! as Map<String, Object?>),
              throwsA(isA<ProtocolException>()));
        });
      }
    });
  }

  test('binary header vectors decode to their fields and samples, and encode back', () {
    final vec = loadVector('binary_header.json');
    expect(vec['header_size'], headerBytes);
    for (final c in (vec['valid']! as List<Object?>).cast<Map<String, Object?>>()) {
      final bytes = Uint8List.fromList(hexBytes(c['hex']! as String));
      final f = BinaryFrame.decode(bytes);
      final h = c['header']! as Map<String, Object?>;
      expect(f.kind, h['kind']);
      expect(f.version, h['version']);
      expect(f.flags, h['flags']);
      expect(f.utterance, h['utterance']);
      expect(f.ptsMs, (h['pts_ms']! as num).toDouble());
      expect(f.samples().toList(), (c['samples']! as List<Object?>).cast<int>());
      expect(f.visemesJson, c['visemes_json']);
      if (f.visemesJson != null) {
        final msg = ServerMessage.decode(f.visemesJson!);
        expect(msg, isA<VisemesMessage>());
        expect((msg as VisemesMessage).utterance, h['utterance']);
      }
      expect(f.encode(), bytes);
    }
    for (final c in (vec['invalid']! as List<Object?>).cast<Map<String, Object?>>()) {
      expect(() => BinaryFrame.decode(Uint8List.fromList(hexBytes(c['hex']! as String))),
          throwsA(isA<ProtocolException>()), reason: '${c['name']}');
    }
  });

  test('mouth-patch vectors decode to their header and image; bad ones are refused', () {
    final vec = loadVector('binary_patch.json');
    expect(vec['header_size'], patchHeaderBytes);
    for (final c in (vec['valid']! as List<Object?>).cast<Map<String, Object?>>()) {
      final bytes = Uint8List.fromList(hexBytes(c['hex']! as String));
      // The common header reads as kind 2 too (what the session dispatches on).
      expect(BinaryFrame.decode(bytes).kind, kindPatch);
      final p = PatchFrame.decode(bytes);
      final h = c['header']! as Map<String, Object?>;
      expect(p.utterance, h['utterance']);
      expect(p.ptsMs, (h['pts_ms']! as num).toDouble());
      expect(p.idleIndex, h['idle_index']);
      expect(<int>[p.x, p.y, p.w, p.h], <Object?>[h['x'], h['y'], h['w'], h['h']]);
      expect(p.format, h['format']);
      expect(p.image.toList(), hexBytes(c['image_hex']! as String));
    }
    for (final c in (vec['invalid']! as List<Object?>).cast<Map<String, Object?>>()) {
      expect(() => PatchFrame.decode(Uint8List.fromList(hexBytes(c['hex']! as String))),
          throwsA(isA<ProtocolException>()), reason: '${c['name']}');
    }
  });

  test('a frame inside a larger buffer (offset view) decodes', () {
    final frame = BinaryFrame(kind: kindAudio, utterance: 9, ptsMs: 40,
        payload: Uint8List.fromList(<int>[5, 0, 251, 255])).encode();
    final big = Uint8List(frame.length + 3)..setAll(3, frame);
    final f = BinaryFrame.decode(Uint8List.sublistView(big, 3));
    expect(f.utterance, 9);
    expect(f.samples().toList(), <int>[5, -5]);
  });

  test('the client messages it sends pass the strict decoder', () {
    for (final m in <ClientMessage>[
      const Ping(id: 1, clientTimeMs: 2.5),
      const Speak('Hallo', bargeIn: true),
      const TextDelta('Ha'),
      const TextEnd(),
      const StopRequest(),
    ]) {
      expect(ClientMessage.decode(m.encode()).toJson(), m.toJson());
    }
  });

  test('not JSON and unknown types are protocol errors', () {
    expect(() => ServerMessage.decode('{oops'), throwsA(isA<ProtocolException>()));
    expect(() => ServerMessage.decode('{"type":"nope"}'), throwsA(isA<ProtocolException>()));
    expect(() => ServerMessage.decode('[1]'), throwsA(isA<ProtocolException>()));
  });
}
