import 'dart:typed_data';

import 'package:flutter/rendering.dart';
import 'package:flutter_test/flutter_test.dart';
import 'package:lipcore_client/lipcore_client.dart';

/// A plugin back end's renderer, as an app would register it.
class _FlatRenderer extends MouthRenderer {
  const _FlatRenderer();

  @override
  String get label => 'Flat';

  @override
  Future<LoadedAvatar> load(LipcoreApi api, AvatarInfo info, MouthTrack track) async =>
      LoadedAvatar(info, track, patchRoi: Roi.fromJson(info.lipsync['roi']! as Map<String, Object?>));

  @override
  MouthPainter painter(LoadedAvatar avatar,
          {required Weights weights,
          required int frameIndex,
          required Size videoSize,
          PatchImage? patch}) =>
      PatchPainter(avatar: avatar, weights: weights, frameIndex: frameIndex,
          videoSize: videoSize, patch: null);
}

final _track = MouthTrack(25, <Float64List>[Float64List.fromList(<double>[1, 0, 0, 0, 1, 0])]);

AvatarInfo _info(String kind, {bool usable = true, String? reason}) => AvatarInfo(
    id: 'a',
    idleUrl: Uri.parse('http://x/idle.mp4'),
    lipsync: <String, Object?>{'type': kind, 'roi': <String, Object?>{'x': 1, 'y': 2, 'w': 3, 'h': 4}},
    usable: usable,
    reason: reason);

void main() {
  test('the shipped kinds have renderers; a plugin kind is registered by the app', () {
    expect(MouthRenderers.of('sprites'), isA<SpriteRenderer>());
    expect(MouthRenderers.of('mesh'), isA<MeshRenderer>());
    expect(MouthRenderers.of('onnx'), isA<PatchRenderer>());
    expect(MouthRenderers.of('flatmouth'), isNull);
    MouthRenderers.register('flatmouth', const _FlatRenderer());
    expect(MouthRenderers.of('flatmouth')!.label, 'Flat');
  });

  test('an avatar drawn without a mouth carries its notice and no renderer', () {
    final avatar = LoadedAvatar(_info('hologram'), _track, notice: 'no renderer');
    expect(avatar.renderer, isNull);
    expect(avatar.notice, 'no renderer');
    expect(avatar.roi.w, 3);
  });

  test('usable and reason come from the server listing', () {
    final info = AvatarInfo.fromJson(<String, Object?>{
      'avatar_id': 'a',
      'idle_url': '/idle.mp4',
      'lipsync_assets': <String, Object?>{'type': 'hologram'},
      'usable': false,
      'reason': 'No lipsync back end named hologram',
    }, Uri.parse('http://x/'));
    expect(info.usable, isFalse);
    expect(info.reason, contains('hologram'));
  });
}
