import 'dart:typed_data';
import 'dart:ui' as ui;

import 'package:flutter/material.dart';
import 'package:flutter_test/flutter_test.dart';
import 'package:lipcore_client/lipcore_client.dart';

const Roi _roi = Roi(40, 60, 40, 20);
const List<String> _classes = defaultClasses;

Future<ui.Image> _solid(int w, int h, Color Function(int i) color, {int cells = 1}) async {
  final rec = ui.PictureRecorder();
  final c = Canvas(rec);
  for (var i = 0; i < cells; i++) {
    c.drawRect(Rect.fromLTWH((i % 4) * 40.0, (i ~/ 4) * 20.0, 40, 20), Paint()..color = color(i));
  }
  return rec.endRecording().toImage(w, h);
}

Future<List<int>> _render(MouthPainter painter) async {
  final rec = ui.PictureRecorder();
  painter.paint(Canvas(rec), const Size(120, 120));
  final img = await rec.endRecording().toImage(120, 120);
  final bytes = (await img.toByteData())!;
  // The pixel in the middle of the ROI on idle frame 0 (identity affine): (60, 70).
  final o = 4 * (70 * 120 + 60);
  return <int>[for (var k = 0; k < 4; k++) bytes.getUint8(o + k)];
}

void main() {
  testWidgets('the sprite overlay cross-fades atlas cells at the ROI', (tester) async {
    await tester.runAsync(() async {
      // 12 cells in a 4×3 atlas: Rest is black, AI is white, the others grey.
      final atlasImage = await _solid(160, 60, (i) => i == 0
          ? const Color(0xFF000000)
          : i == 1
              ? const Color(0xFFFFFFFF)
              : const Color(0xFF808080), cells: 12);
      final avatar = LoadedAvatar(
        AvatarInfo(id: 'a', idleUrl: Uri.parse('http://x/idle.mp4'),
            lipsync: const <String, Object?>{'type': 'sprites'}),
        MouthTrack(25, <Float64List>[Float64List.fromList(<double>[1, 0, 0, 0, 1, 0])]),
        atlas: const AtlasDef(cols: 4, rows: 3, classes: _classes, roi: _roi, mask: null),
        atlasImage: atlasImage,
      );
      SpritePainter p(Weights w) => SpritePainter(
          avatar: avatar, weights: w, frameIndex: 0, videoSize: const Size(120, 120));
      final atRest = await _render(p(const <String, double>{}));
      final open = await _render(p(const <String, double>{'AI': 1}));
      final half = await _render(p(const <String, double>{'AI': 0.5}));
      expect(atRest.sublist(0, 3), <int>[0, 0, 0]);
      expect(open.sublist(0, 3), <int>[255, 255, 255]);
      expect(half[0], inInclusiveRange(120, 135)); // premultiplied sum: half white over black
      expect(half[3], 255);
    });
  });

  testWidgets('the mesh overlay moves texture by the blended offsets', (tester) async {
    await tester.runAsync(() async {
      // Texture: top half white, bottom half black.
      final rec = ui.PictureRecorder();
      Canvas(rec)
        ..drawRect(const Rect.fromLTWH(0, 0, 40, 10), Paint()..color = const Color(0xFFFFFFFF))
        ..drawRect(const Rect.fromLTWH(0, 10, 40, 10), Paint()..color = const Color(0xFF000000));
      final texture = await rec.endRecording().toImage(40, 20);
      const cols = 3;
      const rows = 3;
      // AI pushes the middle row down by 6 px: white reaches further down.
      final ai = <List<double>>[
        for (var i = 0; i < cols * rows; i++) <double>[0, i ~/ cols == 1 ? 6 : 0],
      ];
      final avatar = LoadedAvatar(
        AvatarInfo(id: 'm', idleUrl: Uri.parse('http://x/idle.mp4'),
            lipsync: const <String, Object?>{'type': 'mesh'}),
        MouthTrack(25, <Float64List>[Float64List.fromList(<double>[1, 0, 0, 0, 1, 0])]),
        mesh: MeshDef(cols: cols, rows: rows, roi: _roi,
            targets: <String, List<List<double>>>{'AI': ai}),
        texture: texture,
      );
      MeshPainter p(Weights w) => MeshPainter(
          avatar: avatar, weights: w, frameIndex: 0, videoSize: const Size(120, 120));
      final atRest = await _render(p(const <String, double>{}));
      final open = await _render(p(const <String, double>{'AI': 1}));
      expect(atRest[0], lessThan(60)); // (60, 70) is just below the middle: black at rest
      expect(open[0], greaterThan(200)); // the white half was pulled over it
    });
  });

  test('affineMatrix is the column-major 4×4 of [a b c d e f]', () {
    final m = affineMatrix(Float64List.fromList(<double>[1, 2, 3, 4, 5, 6]));
    expect(m.toList(), <double>[1, 4, 0, 0, 2, 5, 0, 0, 0, 0, 1, 0, 3, 6, 0, 1]);
  });
}
