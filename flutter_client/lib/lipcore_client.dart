/// Flutter client of lipcore: a live, photo-real 2D talking avatar from one still photo.
///
/// * [LipcoreApi] finds an avatar and opens a session on a lipcore server;
/// * [LipcoreSession] speaks protocol v1 over the session's WebSocket, plays the audio
///   gap-free and keeps the mouth on the audio clock;
/// * [AvatarView] shows the idle loop with the mouth overlay, drawn by the avatar kind's
///   renderer ([MouthRenderers]: sprites, mesh, onnx, or one an app registers).
library;

export 'src/assets.dart';
export 'src/audio.dart';
export 'src/avatar_view.dart';
export 'src/overlay.dart' show MeshPainter, MouthPainter, PatchPainter, SpritePainter, affineMatrix;
export 'src/protocol.dart';
export 'src/renderers.dart';
export 'src/session.dart';
export 'src/timeline.dart';
