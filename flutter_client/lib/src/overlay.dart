// Layer 1, the mouth overlay, as CustomPainters: sprites (premultiplied cross-fade of the
// highest-weighted atlas cells) and mesh (`drawVertices` warp of the ROI over the interior).
// Both paint in photo pixels under the mouth track's affine of the idle frame on screen.

import 'dart:typed_data';
import 'dart:ui' as ui;

import 'package:flutter/rendering.dart';

import 'assets.dart';
import 'protocol.dart';
import 'session.dart';
import 'timeline.dart';

/// Column-major 4×4 of the affine `[a, b, c, d, e, f]` (photo px → idle frame px).
Float64List affineMatrix(Float64List m) => Float64List.fromList(<double>[
      m[0], m[3], 0, 0, //
      m[1], m[4], 0, 0, //
      0, 0, 1, 0, //
      m[2], m[5], 0, 1, //
    ]);

/// Paints the mouth of [avatar] for [weights] on idle frame [frameIndex]; the canvas is the
/// video's box, [videoSize] its intrinsic size.
abstract class MouthPainter extends CustomPainter {
  MouthPainter({
    required this.avatar,
    required this.weights,
    required this.frameIndex,
    required this.videoSize,
    super.repaint,
  });

  final LoadedAvatar avatar;
  final Weights weights;
  final int frameIndex;
  final Size videoSize;

  @override
  void paint(Canvas canvas, Size size) {
    if (videoSize.isEmpty) return;
    canvas
      ..save()
      ..clipRect(Offset.zero & size)
      ..scale(size.width / videoSize.width, size.height / videoSize.height)
      ..transform(affineMatrix(avatar.track.at(frameIndex)));
    paintMouth(canvas);
    canvas.restore();
  }

  /// Paint in photo pixels.
  void paintMouth(Canvas canvas);

  ui.Rect get roiRect {
    final r = avatar.roi;
    return ui.Rect.fromLTWH(r.x, r.y, r.w, r.h);
  }

  @override
  bool shouldRepaint(covariant MouthPainter old) =>
      old.weights != weights || old.frameIndex != frameIndex || old.avatar != avatar;
}

/// Variant A: cross-fade of up to three atlas cells.
class SpritePainter extends MouthPainter {
  SpritePainter({
    required super.avatar,
    required super.weights,
    required super.frameIndex,
    required super.videoSize,
    super.repaint,
  });

  @override
  void paintMouth(Canvas canvas) {
    final atlas = avatar.atlas!;
    final image = avatar.atlasImage!;
    final dst = roiRect;
    // In a layer, `plus` adds premultiplied colours: Σ w·cell with no dark fringe where the
    // cells' alpha is feathered. The mask then cuts the layer with dstIn.
    canvas.saveLayer(dst, Paint());
    for (final cell in topCells(weights, classes: atlas.classes)) {
      final src = atlas.cellRect(cell.cls, image.width, image.height);
      canvas.drawImageRect(
        image,
        src,
        dst,
        Paint()
          ..blendMode = BlendMode.plus
          ..filterQuality = FilterQuality.medium
          ..color = Color.fromRGBO(255, 255, 255, cell.weight),
      );
    }
    _cutByMask(canvas, avatar.mask, dst);
    canvas.restore();
  }
}

/// Variant C: the server-rendered mouth patch due now, through the mask; none: the idle
/// loop's own mouth shows.
class PatchPainter extends MouthPainter {
  PatchPainter({
    required super.avatar,
    required super.weights,
    required super.frameIndex,
    required super.videoSize,
    required this.patch,
    super.repaint,
  });

  final PatchImage? patch;

  @override
  void paintMouth(Canvas canvas) {
    final p = patch;
    if (p == null) return;
    final dst = ui.Rect.fromLTWH(p.x.toDouble(), p.y.toDouble(), p.w.toDouble(), p.h.toDouble());
    canvas
      ..saveLayer(dst, Paint())
      ..drawImageRect(
        p.image,
        Offset.zero & Size(p.image.width.toDouble(), p.image.height.toDouble()),
        dst,
        Paint()..filterQuality = FilterQuality.medium,
      );
    _cutByMask(canvas, avatar.mask, dst);
    canvas.restore();
  }

  @override
  bool shouldRepaint(covariant MouthPainter old) =>
      super.shouldRepaint(old) || (old is PatchPainter && old.patch?.seq != patch?.seq);
}

/// Cut the layer being painted (the mouth at [dst], photo px) by [mask]'s luminance.
void _cutByMask(Canvas canvas, ui.Image? mask, ui.Rect dst) {
  if (mask == null) return;
  canvas.drawImageRect(
    mask,
    Offset.zero & Size(mask.width.toDouble(), mask.height.toDouble()),
    dst,
    Paint()
      ..blendMode = BlendMode.dstIn
      ..colorFilter = const ColorFilter.matrix(_lumaToAlpha),
  );
}

/// A grey mask's luminance as alpha (white = opaque).
const List<double> _lumaToAlpha = <double>[
  0, 0, 0, 0, 255, //
  0, 0, 0, 0, 255, //
  0, 0, 0, 0, 255, //
  1, 0, 0, 0, 0, //
];

/// Variant B: the ROI texture warped by the blended control-point offsets.
class MeshPainter extends MouthPainter {
  MeshPainter({
    required super.avatar,
    required super.weights,
    required super.frameIndex,
    required super.videoSize,
    super.repaint,
  });

  static final Expando<_Grid> _grids = Expando<_Grid>();

  _Grid get _grid => _grids[avatar] ??= _Grid(avatar.mesh!, avatar.texture!);

  @override
  void paintMouth(Canvas canvas) {
    final mesh = avatar.mesh!;
    final grid = _grid;
    final dst = roiRect;
    canvas.saveLayer(dst, Paint());
    final interior = avatar.interior;
    if (interior != null && activity(weights) > 0.01) {
      // Teeth and cavity belong to the skull: drawn still, the warped lips and skin over it.
      canvas.drawImageRect(interior,
          Offset.zero & Size(interior.width.toDouble(), interior.height.toDouble()), dst,
          Paint()..filterQuality = FilterQuality.medium);
    }
    final offsets = blendMeshOffsets(mesh.targets, mesh.points, weights);
    final pos = Float32List(grid.rest.length);
    for (var i = 0; i < pos.length; i++) {
      pos[i] = grid.rest[i] + offsets[i];
    }
    final vertices = ui.Vertices.raw(VertexMode.triangles, pos,
        textureCoordinates: grid.uv, indices: grid.indices);
    canvas.drawVertices(vertices, BlendMode.srcOver, grid.paint);
    vertices.dispose();
    _cutByMask(canvas, avatar.mask, dst);
    canvas.restore();
  }
}

/// The mesh's rest positions (photo px), texture coordinates (texture px) and triangles.
class _Grid {
  _Grid(MeshDef def, ui.Image texture)
      : rest = Float32List(2 * def.points),
        uv = Float32List(2 * def.points),
        indices = Uint16List(6 * (def.cols - 1) * (def.rows - 1)),
        paint = Paint()
          ..filterQuality = FilterQuality.medium
          ..shader = ImageShader(texture, TileMode.clamp, TileMode.clamp,
              _identity4) {
    final r = def.roi;
    for (var row = 0; row < def.rows; row++) {
      for (var col = 0; col < def.cols; col++) {
        final i = row * def.cols + col;
        final u = col / (def.cols - 1);
        final v = row / (def.rows - 1);
        rest[2 * i] = r.x + u * r.w;
        rest[2 * i + 1] = r.y + v * r.h;
        uv[2 * i] = u * texture.width;
        uv[2 * i + 1] = v * texture.height;
      }
    }
    var k = 0;
    for (var row = 0; row < def.rows - 1; row++) {
      for (var col = 0; col < def.cols - 1; col++) {
        final i = row * def.cols + col;
        indices.setAll(k, <int>[i, i + 1, i + def.cols, i + 1, i + def.cols + 1, i + def.cols]);
        k += 6;
      }
    }
  }

  final Float32List rest;
  final Float32List uv;
  final Uint16List indices;
  final Paint paint;
}

/// The identity matrix as `ImageShader` wants it (column-major 4×4).
final Float64List _identity4 = Float64List.fromList(<double>[
  1, 0, 0, 0, //
  0, 1, 0, 0, //
  0, 0, 1, 0, //
  0, 0, 0, 1, //
]);
