// The avatar on screen: layer 0 the idle loop (video_player, muted, looping), layer 1 the mouth
// overlay painted every display frame at the audio clock's position.

import 'dart:async';

import 'package:flutter/rendering.dart';
import 'package:flutter/scheduler.dart';
import 'package:flutter/widgets.dart';
import 'package:video_player/video_player.dart';

import 'assets.dart';
import 'session.dart';
import 'timeline.dart';

/// Idle loop + mouth overlay of [avatar], driven by [session] (none: the mouth stays at rest).
class AvatarView extends StatefulWidget {
  const AvatarView({required this.avatar, this.session, this.onFrame, super.key});

  final LoadedAvatar avatar;
  final LipcoreSession? session;

  /// Called after each overlay frame with the mouth drawn (readouts, tests).
  final void Function(MouthState mouth, int frameIndex)? onFrame;

  @override
  State<AvatarView> createState() => _AvatarViewState();
}

class _AvatarViewState extends State<AvatarView> with SingleTickerProviderStateMixin {
  late VideoPlayerController _video;
  late final Ticker _ticker;
  final ValueNotifier<int> _tick = ValueNotifier<int>(0);
  MouthState _mouth = (weights: const <String, double>{}, utterance: null, ptsMs: null);
  int _frameIndex = 0;

  // video_player reports its position only now and then; between reports the position is
  // extrapolated with a stopwatch so the overlay follows the head frame by frame.
  Duration _lastPosition = Duration.zero;
  final Stopwatch _sincePosition = Stopwatch();
  Duration _lastElapsed = Duration.zero;
  double _frameIntervalMs = 1000 / 60;

  @override
  void initState() {
    super.initState();
    _ticker = createTicker(_onTick)..start();
    _openVideo();
  }

  void _openVideo() {
    _video = VideoPlayerController.networkUrl(widget.avatar.info.idleUrl,
        videoPlayerOptions: VideoPlayerOptions(mixWithOthers: true))
      ..addListener(_onVideo);
    unawaited(_video.initialize().then((_) async {
      await _video.setLooping(true);
      await _video.setVolume(0);
      await _video.play();
      if (mounted) setState(() {});
    }));
  }

  @override
  void didUpdateWidget(AvatarView old) {
    super.didUpdateWidget(old);
    if (old.avatar.info.idleUrl != widget.avatar.info.idleUrl) {
      _video
        ..removeListener(_onVideo)
        ..dispose();
      _openVideo();
    }
  }

  void _onVideo() {
    final v = _video.value;
    if (v.position != _lastPosition) {
      _lastPosition = v.position;
      _sincePosition
        ..reset()
        ..start();
    }
  }

  void _onTick(Duration elapsed) {
    final dt = (elapsed - _lastElapsed).inMicroseconds / 1000;
    _lastElapsed = elapsed;
    if (dt > 0 && dt < 100) _frameIntervalMs = 0.9 * _frameIntervalMs + 0.1 * dt;
    final v = _video.value;
    if (v.isInitialized && v.duration > Duration.zero) {
      final extra = v.isPlaying ? _sincePosition.elapsedMicroseconds : 0;
      final us = (_lastPosition.inMicroseconds + extra) % v.duration.inMicroseconds;
      final track = widget.avatar.track;
      _frameIndex = frameIndexAt(us / 1e6, track.fps, track.affines.length);
    }
    // The frame painted now is shown about one display interval later.
    _mouth = widget.session?.mouthNow(displayDelayMs: _frameIntervalMs) ??
        (weights: const <String, double>{}, utterance: null, ptsMs: null);
    _tick.value++;
    widget.onFrame?.call(_mouth, _frameIndex);
  }

  @override
  void dispose() {
    _ticker.dispose();
    _video
      ..removeListener(_onVideo)
      ..dispose();
    _tick.dispose();
    super.dispose();
  }

  @override
  Widget build(BuildContext context) {
    final v = _video.value;
    if (!v.isInitialized) return const SizedBox.expand();
    return FittedBox(
      fit: BoxFit.contain,
      child: SizedBox(
        width: v.size.width,
        height: v.size.height,
        child: Stack(
          fit: StackFit.expand,
          children: <Widget>[
            VideoPlayer(_video),
            CustomPaint(painter: _OverlayDelegate(this, _tick, v.size)),
            if (widget.avatar.notice != null)
              Positioned(left: 8, right: 8, bottom: 8, child: _Notice(widget.avatar.notice!)),
          ],
        ),
      ),
    );
  }
}

/// Repaints on every tick with the state's latest mouth; the avatar kind's renderer picks the
/// painter (none: the idle loop alone).
class _OverlayDelegate extends CustomPainter {
  _OverlayDelegate(this.state, Listenable tick, this.videoSize) : super(repaint: tick);

  final _AvatarViewState state;
  final Size videoSize;

  @override
  void paint(Canvas canvas, Size size) {
    final avatar = state.widget.avatar;
    final renderer = avatar.renderer;
    if (renderer == null) return;
    renderer
        .painter(avatar,
            weights: state._mouth.weights,
            frameIndex: state._frameIndex,
            videoSize: videoSize,
            patch: state.widget.session?.patch)
        .paint(canvas, size);
  }

  @override
  bool shouldRepaint(_OverlayDelegate old) => old.videoSize != videoSize;
}

/// The visible notice over an avatar whose mouth is not drawn.
class _Notice extends StatelessWidget {
  const _Notice(this.text);

  final String text;

  @override
  Widget build(BuildContext context) => DecoratedBox(
        decoration: BoxDecoration(
          color: const Color(0xBF141414),
          borderRadius: BorderRadius.circular(6),
        ),
        child: Padding(
          padding: const EdgeInsets.symmetric(horizontal: 10, vertical: 6),
          child: Text(text,
              textDirection: TextDirection.ltr,
              style: const TextStyle(color: Color(0xFFFFFFFF), fontSize: 13)),
        ),
      );
}
