// The mouth renderers by avatar kind (`lipsync_assets.type`): each loads what its kind needs
// and paints the mouth. The three shipped kinds are built in; an app registers the renderer of
// a plugin back end with [MouthRenderers.register]. An avatar whose kind has no renderer here
// (or that the server lists as unusable) loads without a mouth: the idle loop plays alone and
// [AvatarView] shows its notice.

import 'dart:ui' as ui;

import 'package:flutter/rendering.dart';

import 'assets.dart';
import 'overlay.dart';
import 'protocol.dart';
import 'session.dart';

/// Draws the mouth of one avatar kind.
abstract class MouthRenderer {
  const MouthRenderer();

  /// A short name for the kind, shown by apps.
  String get label;

  /// Load the avatar's assets for this kind ([track] is already loaded).
  Future<LoadedAvatar> load(LipcoreApi api, AvatarInfo info, MouthTrack track);

  /// The painter of one overlay frame.
  MouthPainter painter(LoadedAvatar avatar,
      {required Weights weights,
      required int frameIndex,
      required Size videoSize,
      PatchImage? patch});
}

/// The renderer registry, by kind.
abstract final class MouthRenderers {
  static final Map<String, MouthRenderer> _byKind = <String, MouthRenderer>{
    'sprites': const SpriteRenderer(),
    'mesh': const MeshRenderer(),
    'onnx': const PatchRenderer(),
  };

  /// Use [renderer] for avatars of [kind] (a plugin back end's, or a replacement).
  static void register(String kind, MouthRenderer renderer) => _byKind[kind] = renderer;

  /// The renderer of [kind], or null when this app has none.
  static MouthRenderer? of(String kind) => _byKind[kind];

  /// The kinds this app draws.
  static List<String> get kinds => _byKind.keys.toList(growable: false);
}

Future<ui.Image?> _optionalImage(LipcoreApi api, Uri url) =>
    api.getImage(url).then<ui.Image?>((i) => i, onError: (Object _) => null);

Uri _assetUrl(LipcoreApi api, AvatarInfo info, String key, String fallback) => api.base
    .resolve((info.lipsync[key] as String?) ?? info.idleUrl.resolve(fallback).toString());

/// Variant A: cross-fade of atlas cells.
class SpriteRenderer extends MouthRenderer {
  const SpriteRenderer();

  @override
  String get label => 'Sprites';

  @override
  Future<LoadedAvatar> load(LipcoreApi api, AvatarInfo info, MouthTrack track) async {
    final maskUrl = info.lipsync['mask_url'] as String?;
    final atlasUrl = _assetUrl(api, info, 'atlas_url', 'atlas.json');
    final atlas = AtlasDef.fromJson(await api.getJson(atlasUrl));
    final image = await api.getImage(atlasUrl.resolve(atlas.image ?? 'atlas.png'));
    final mask = maskUrl != null || atlas.mask != null
        ? await api.getImage(maskUrl != null ? api.base.resolve(maskUrl)
            : atlasUrl.resolve(atlas.mask!))
        : null;
    return LoadedAvatar(info, track, atlas: atlas, atlasImage: image, mask: mask);
  }

  @override
  MouthPainter painter(LoadedAvatar avatar,
          {required Weights weights,
          required int frameIndex,
          required Size videoSize,
          PatchImage? patch}) =>
      SpritePainter(avatar: avatar, weights: weights, frameIndex: frameIndex,
          videoSize: videoSize);
}

/// Variant B: the ROI texture warped by a control-point mesh.
class MeshRenderer extends MouthRenderer {
  const MeshRenderer();

  @override
  String get label => 'Mesh warp';

  @override
  Future<LoadedAvatar> load(LipcoreApi api, AvatarInfo info, MouthTrack track) async {
    final maskUrl = info.lipsync['mask_url'] as String?;
    final defUrl = _assetUrl(api, info, 'meshdef_url', 'meshdef.json');
    final def = MeshDef.fromJson(await api.getJson(defUrl));
    final images = await Future.wait(<Future<ui.Image?>>[
      api.getImage(defUrl.resolve(def.texture ?? 'mouth_texture.png')),
      _optionalImage(api, defUrl.resolve(def.interior ?? 'interior.png')),
      _optionalImage(api, maskUrl != null ? api.base.resolve(maskUrl)
          : defUrl.resolve(def.mask ?? 'mask_mouth.png')),
    ]);
    return LoadedAvatar(info, track, mesh: def, texture: images[0], interior: images[1],
        mask: images[2]);
  }

  @override
  MouthPainter painter(LoadedAvatar avatar,
          {required Weights weights,
          required int frameIndex,
          required Size videoSize,
          PatchImage? patch}) =>
      MeshPainter(avatar: avatar, weights: weights, frameIndex: frameIndex,
          videoSize: videoSize);
}

/// Variant C: the server renders the mouth from the audio; this places its patches.
class PatchRenderer extends MouthRenderer {
  const PatchRenderer();

  @override
  String get label => 'Wav2Lip (server-rendered)';

  @override
  Future<LoadedAvatar> load(LipcoreApi api, AvatarInfo info, MouthTrack track) async {
    final maskUrl = info.lipsync['mask_url'] as String?;
    final roi = info.lipsync['roi'];
    if (roi is! Map<String, Object?>) {
      throw FormatException('avatar ${info.id}: an onnx avatar lacks lipsync_assets.roi');
    }
    final mask = maskUrl != null && maskUrl.isNotEmpty
        ? await _optionalImage(api, api.base.resolve(maskUrl))
        : null;
    return LoadedAvatar(info, track, patchRoi: Roi.fromJson(roi), mask: mask);
  }

  @override
  MouthPainter painter(LoadedAvatar avatar,
          {required Weights weights,
          required int frameIndex,
          required Size videoSize,
          PatchImage? patch}) =>
      PatchPainter(avatar: avatar, weights: weights, frameIndex: frameIndex,
          videoSize: videoSize, patch: patch);
}
