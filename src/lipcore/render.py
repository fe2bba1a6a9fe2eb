"""Finished frames from an avatar: the idle loop with the mouth overlay composited.

This is the server-side / offline renderer. ``lipcore say`` writes videos with it; a server
preview or any client that wants finished frames (rather than compositing the overlay itself)
uses it too. The live clients do the same thing on their side: idle loop as a video layer,
overlay placed by the mouth track, weights sampled on the audio clock.

    avatar = load_avatar("avatars/grace")
    renderer = open_avatar_renderer(avatar)              # the back end the manifest names
    timeline = VisemeTimeline(utterance.frames)          # VisemeFrame(pts_ms, weights)
    frame = renderer.frame(k, timeline.at(t_ms))         # video frame k, audio time t_ms

Viseme frames arrive at the mapper's rate (30 fps by default); video runs at the idle loop's
rate. :class:`VisemeTimeline` interpolates weights linearly between the frames around ``t``.
Barge-in: :func:`ramp_to_rest` cuts a viseme track at ``stop_ms`` and fades the mouth from the
shape it has at that moment to Rest over ``ramp_ms`` (100–200 ms, as the wire protocol's
``stop`` event tells clients to do).
"""

from __future__ import annotations

import bisect
import inspect
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from lipcore.errors import InputError, LipcoreError, PluginNotFoundError, TTSError
from lipcore.interfaces import AudioMouthRenderer, MouthRenderer, PhonemeTiming, VisemeFrame

if TYPE_CHECKING:
    from lipcore.avatar.store import Avatar
    from lipcore.engine import Engine, Utterance
    from lipcore.patches import MouthPatch

__all__ = [
    "REST",
    "AvatarRenderer",
    "BackendAssetsError",
    "SpeechPlan",
    "TalkResult",
    "VisemeTimeline",
    "aligned_offset_ms",
    "open_avatar_renderer",
    "ramp_to_rest",
    "render_talk",
    "synthesize",
]

REST = "Rest"
_EPS = 1e-3

#: x264 options for talking videos (on top of the writer's preset, veryfast), chosen by
#: measuring bilabial closures after the encode (``plugins/meshwarp/tests/test_sync_closure``:
#: one closed frame between open vowels on a smiling photo, apertures by the landmarker, and
#: the mean error of the decoded mouth against the rendered one).
#:
#: * ``no-mbtree``: MB-tree spends bits on what later frames reference; a mouth shape held for
#:   a frame or two is referenced by little, so with MB-tree a closure decodes as a smear of
#:   the open neighbours (x264's defaults at CRF 20: closed apertures up to 0.10, closed <
#:   0.05).
#: * ``bframes=0``: a one-frame closure coded as a B-frame gets a coarser quantiser (and
#:   veryfast's dead zone drops the small residual: a faint ghost of the teeth between the
#:   lips). As P-frames only, the closed mouth decodes closer to the render than trellis=2
#:   with B-frames did (mean mouth error 2.2 vs 2.4–3.0 levels; closed apertures ≤ 0.009 vs
#:   ≤ 0.017), without trellis.
#: * ``rc-lookahead=0:me=dia:subme=1:partitions=none:weightp=0``: the photo barely moves, so
#:   motion search and partition analysis buy little; this halves the encoder's CPU time per
#:   frame (1024²: ~12 ms instead of ~25 ms), which is what lets offline ``say`` run ≥ 3× real
#:   time on two cores. The price is size: ~2× the writer's defaults (~3.6 Mbit/s at 1024²,
#:   CRF 18), acceptable for short talking videos.
#:
#: * ``aq-mode=0``: adaptive quantisation moves bits from textured blocks (the lips and
#:   teeth) to flat ones; without it the closed mouth decodes closer still (mean error 2.0
#:   instead of 2.2 levels) and the encode takes ~7 % less CPU. At CRF 18 flat skin and
#:   background get enough bits without it.
#:
#: CRF 18 (not the writer's 20) leaves a margin on the closed mouth.
TALK_X264_PARAMS = (
    "no-mbtree=1:bframes=0:rc-lookahead=0:me=dia:subme=1:partitions=none:weightp=0:aq-mode=0"
)
TALK_CRF = 18


class BackendAssetsError(InputError):
    """An avatar lacks the assets of the back end asked for."""

    code = "backend_assets_missing"


class VisemeTimeline:
    """Viseme weights at any time: linear interpolation between the frames around ``t``.

    Before the first frame and after the last one the mouth is at Rest (``{}``): an
    utterance's track starts and ends at Rest anyway, so nothing jumps.
    """

    def __init__(self, frames: Sequence[VisemeFrame]) -> None:
        ordered = sorted(frames, key=lambda f: f.pts_ms)
        self.frames = ordered
        self._pts = [f.pts_ms for f in ordered]

    @property
    def start_ms(self) -> float:
        return self._pts[0] if self._pts else 0.0

    @property
    def end_ms(self) -> float:
        return self._pts[-1] if self._pts else 0.0

    def at(self, t_ms: float) -> dict[str, float]:
        """Weights at ``t_ms`` on the track's timeline (without Rest; the remainder is Rest)."""
        pts = self._pts
        if not pts or t_ms < pts[0] or t_ms > pts[-1]:
            return {}
        k = bisect.bisect_right(pts, t_ms)
        if k >= len(pts):
            return _clean(self.frames[-1].weights)
        f0, f1 = self.frames[k - 1], self.frames[k]
        span = f1.pts_ms - f0.pts_ms
        a = 0.0 if span <= 0 else (t_ms - f0.pts_ms) / span
        out: dict[str, float] = {}
        for name in set(f0.weights) | set(f1.weights):
            if name == REST:
                continue
            v = (1.0 - a) * f0.weights.get(name, 0.0) + a * f1.weights.get(name, 0.0)
            if v >= _EPS:
                out[name] = v
        return out


def _clean(weights: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in weights.items() if k != REST and v >= _EPS}


def ramp_to_rest(
    frames: Sequence[VisemeFrame], stop_ms: float, ramp_ms: float = 150.0
) -> list[VisemeFrame]:
    """Barge-in: the track cut at ``stop_ms``, then a fade to Rest over ``ramp_ms``.

    Frames before ``stop_ms`` are kept. From ``stop_ms`` the mouth holds the shape it has at
    that instant (interpolated) and its weights fall linearly to 0, on the same frame grid as
    the input, reaching Rest exactly at ``stop_ms + ramp_ms``; nothing of the cancelled
    speech follows. ``ramp_ms`` must be 100–200 ms (fast enough to read as "stopped", slow
    enough not to snap).
    """
    if not (100.0 <= ramp_ms <= 200.0):
        raise InputError(f"the barge-in ramp lasts 100–200 ms; got {ramp_ms} ms")
    if not math.isfinite(stop_ms):
        raise InputError(f"stop time must be a number of milliseconds, got {stop_ms!r}")
    ordered = sorted(frames, key=lambda f: f.pts_ms)
    kept = [f for f in ordered if f.pts_ms < stop_ms]
    if not ordered or stop_ms > ordered[-1].pts_ms:
        return list(ordered)  # the track ended (at Rest) before the stop: nothing to ramp
    start = VisemeTimeline(ordered).at(stop_ms)
    step = _frame_step(ordered)
    out = list(kept)
    n = max(1, math.ceil(ramp_ms / step - 1e-9))
    for i in range(n + 1):
        t = stop_ms + min(ramp_ms, i * step)
        gain = 1.0 - (t - stop_ms) / ramp_ms
        out.append(
            VisemeFrame(pts_ms=t, weights={k: v * gain for k, v in start.items() if v * gain > 0})
        )
        if t >= stop_ms + ramp_ms:
            break
    return out


def _frame_step(frames: Sequence[VisemeFrame]) -> float:
    if len(frames) < 2:
        return 1000.0 / 30.0
    diffs = np.diff([f.pts_ms for f in frames])
    diffs = diffs[diffs > 0]
    return float(np.median(diffs)) if len(diffs) else 1000.0 / 30.0


@dataclass(frozen=True, slots=True)
class SpeechPlan:
    """Where an utterance sits in a video: idle before, speech, idle after."""

    fps: float
    audio_offset_ms: float  # the utterance's t = 0 is this far into the video
    audio_ms: float
    tail_ms: float

    @property
    def frames(self) -> int:
        total_ms = self.audio_offset_ms + self.audio_ms + self.tail_ms
        return max(1, math.ceil(total_ms * self.fps / 1000.0 - 1e-9))

    @property
    def duration_s(self) -> float:
        return self.frames / self.fps

    def audio_time_ms(self, k: int) -> float:
        """Utterance time shown by video frame ``k`` (negative before the speech starts)."""
        return k * 1000.0 / self.fps - self.audio_offset_ms


class AvatarRenderer:
    """Idle loop + mouth overlay → finished RGB frames.

    ``frame(k, weights)`` is video frame ``k``: idle frame ``k mod len(loop)`` with the mouth
    for ``weights`` composited by the back end's :class:`MouthRenderer`.
    """

    def __init__(
        self,
        mouth: MouthRenderer,
        idle_frames: Sequence[np.ndarray],
        fps: float,
        *,
        backend: str = "",
    ) -> None:
        if not idle_frames:
            raise InputError("the avatar's idle loop has no frames; rebuild the avatar")
        self.mouth = mouth
        self.idle_frames = list(idle_frames)
        try:
            params = inspect.signature(mouth.render).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        # Back ends built on place_patch composite into a caller's buffer (``out=``): reusing
        # one buffer spares a fresh full-frame allocation (page faults) on every frame.
        self._renders_into = "out" in params
        self.fps = float(fps)
        self.backend = backend

    @property
    def loop_frames(self) -> int:
        return len(self.idle_frames)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the frames."""
        h, w = self.idle_frames[0].shape[:2]
        return w, h

    def frame(self, k: int, weights: Mapping[str, float] | None = None) -> np.ndarray:
        """Video frame ``k`` with the mouth for ``weights`` (``None``: the bare idle frame)."""
        i = k % len(self.idle_frames)
        idle = self.idle_frames[i]
        if weights is None:
            return idle
        out = self.mouth.render(idle, idle_index=i, weights=dict(weights))
        return np.asarray(out)

    def frame_into(
        self, k: int, weights: Mapping[str, float] | None, buffer: np.ndarray
    ) -> np.ndarray:
        """:meth:`frame`, composited into ``buffer`` (H×W×3 uint8) where the back end can:
        the result is ``buffer``, the idle frame itself (``weights is None``) or a new array.
        Use the result before the next call with the same buffer."""
        i = k % len(self.idle_frames)
        idle = self.idle_frames[i]
        if (
            weights is None
            or not self._renders_into
            or buffer.shape != idle.shape
            or type(self).frame is not AvatarRenderer.frame  # a subclass's frames rule
        ):
            return self.frame(k, weights)
        out = self.mouth.render(idle, idle_index=i, weights=dict(weights), out=buffer)  # type: ignore[call-arg]
        return np.asarray(out)

    def render_speech(
        self,
        frames: Sequence[VisemeFrame],
        plan: SpeechPlan,
        *,
        stop_ms: float | None = None,
        ramp_ms: float = 150.0,
    ) -> Iterator[np.ndarray]:
        """Every video frame of ``plan``: idle, the utterance's visemes, idle again.

        ``stop_ms`` (utterance time) cuts the speech there with a ramp to Rest (barge-in).
        Around the speech the mouth is rendered even at Rest, so entering and leaving the
        overlay never pops; far from it the idle frames pass through untouched."""
        for k, weights in self.schedule(frames, plan, stop_ms=stop_ms, ramp_ms=ramp_ms):
            yield self.frame(k, weights)

    def schedule(
        self,
        frames: Sequence[VisemeFrame],
        plan: SpeechPlan,
        *,
        stop_ms: float | None = None,
        ramp_ms: float = 150.0,
    ) -> Iterator[tuple[int, dict[str, float] | None]]:
        """``(k, weights)`` of every video frame of ``plan``, as :meth:`render_speech` renders
        them: ``weights`` is ``None`` where the bare idle frame passes through."""
        track = ramp_to_rest(frames, stop_ms, ramp_ms) if stop_ms is not None else list(frames)
        timeline = VisemeTimeline(track)
        margin = 250.0
        lo = min(0.0, timeline.start_ms) - margin
        hi = max(plan.audio_ms, timeline.end_ms) + margin
        for k in range(plan.frames):
            t = plan.audio_time_ms(k)
            yield k, (timeline.at(t) if lo <= t <= hi else None)


def _changed_box(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)``: the smallest rectangle outside which two H×W×3 uint8 frames are
    equal, or ``None`` when they are equal everywhere."""
    import cv2

    h, w = a.shape[:2]
    row = w * 3
    if row % 8 == 0 and a.flags.c_contiguous and b.flags.c_contiguous:
        # Compare 8 bytes at a time, then box the differing words (~0.5 ms at 1024²;
        # cv2.absdiff + a box over the bytes takes ~2 ms, cv2.reduce ~10 ms).
        ne = a.reshape(h, row).view(np.uint64) != np.ascontiguousarray(b).reshape(h, row).view(
            np.uint64
        )
        bx, by, bw, bh = cv2.boundingRect(ne.view(np.uint8))
        if bw == 0 or bh == 0:
            return None
        return bx * 8 // 3, by, min(w, -(-(bx + bw) * 8 // 3)), by + bh
    diff = cv2.absdiff(a, np.ascontiguousarray(b))
    bx, by, bw, bh = cv2.boundingRect(diff.reshape(h, row))
    if bw == 0 or bh == 0:
        return None
    return bx // 3, by, (bx + bw - 1) // 3 + 1, by + bh


class _I420Frames:
    """Finished frames as BT.709 I420, converting only what the overlay changed.

    Each idle frame is converted once (kept while the cache stays under ``budget`` bytes);
    a frame with the mouth composited is the cached idle frame with only the rectangle that
    differs from the idle frame re-converted: a mouth ROI instead of the whole photo."""

    def __init__(
        self, idle_frames: Sequence[np.ndarray], in_flight: int, budget: int = 512 << 20
    ) -> None:
        from lipcore.media import rgb_to_i420

        self._convert = rgb_to_i420
        self.ring_size = in_flight + 2  # + the frame being made + one spare
        self._ring: list[np.ndarray] = []
        self._next = 0
        self.idle = idle_frames
        h, w = idle_frames[0].shape[:2]
        self.even = h % 2 == 0 and w % 2 == 0
        self.enabled = self.even and len(idle_frames) * h * w * 3 // 2 <= budget
        self._cache: dict[int, np.ndarray] = {}

    def base(self, i: int) -> np.ndarray:
        hit = self._cache.get(i)
        if hit is None:
            hit = self._convert(np.ascontiguousarray(self.idle[i][:, :, :3]))
            if self.enabled:
                self._cache[i] = hit
        return hit

    def frame(self, i: int, rgb: np.ndarray | None) -> np.ndarray:
        """I420 of ``rgb`` (idle frame ``i`` with the overlay), or of idle frame ``i`` itself
        for ``None``. The result may be shared with the cache: do not write into it."""

        from lipcore.media import update_i420_region

        if rgb is None:
            return self.base(i)
        if not self.enabled:
            return self._convert(np.ascontiguousarray(rgb[:, :, :3]))
        box = _changed_box(np.ascontiguousarray(rgb[:, :, :3]), self.idle[i][:, :, :3])
        if box is None:
            return self.base(i)
        x0, y0, x1, y1 = box
        out = self._next_buffer()
        np.copyto(out, self.base(i))
        update_i420_region(out, rgb, x0, y0, x1, y1)
        return out

    def _next_buffer(self) -> np.ndarray:
        # Recycled buffers: a fresh 1.5 MB array per frame costs ~3 ms of page faults at 1024²,
        # more than the conversion itself. The ring outlives the writer's frames in flight.
        if len(self._ring) < self.ring_size:
            h, w = self.idle[0].shape[:2]
            self._ring.append(np.empty((h * 3 // 2, w), np.uint8))
        buf = self._ring[self._next % len(self._ring)]
        self._next += 1
        return buf


def open_avatar_renderer(
    avatar: Avatar | Any,
    *,
    engine: Engine | None = None,
    backend: str | None = None,
) -> AvatarRenderer:
    """An :class:`AvatarRenderer` for a loaded avatar, through the plugin system.

    ``backend`` overrides the manifest's lipsync type; the avatar directory must then hold
    that back end's assets too, else :class:`BackendAssetsError` says how to build them.
    """
    if engine is None:
        from lipcore.engine import Engine

        engine = Engine()
    kind = backend or avatar.lipsync_type
    plugin = engine.lipsync_backend(kind, avatar=avatar.id)
    view = avatar if kind == avatar.lipsync_type else _AvatarAs(avatar, kind)
    try:
        # _AvatarAs stands in for the avatar (an Avatar with another manifest type).
        mouth = plugin.open_renderer(cast("Avatar", view))
    except PluginNotFoundError:
        raise
    except LipcoreError as exc:
        if kind == avatar.lipsync_type:
            raise
        raise BackendAssetsError(
            f"avatar {avatar.id!r} was built for the {avatar.lipsync_type!r} back end and has "
            f"no {kind!r} assets ({exc}). Avatarize the photo with `--backend {kind}` "
            f"(lipcore avatarize PHOTO --out DIR --backend {kind}) or drop --backend."
        ) from exc
    if isinstance(mouth, AudioMouthRenderer):
        return AudioDrivenRenderer(
            mouth, avatar.idle_frames(), float(avatar.manifest.idle.fps), backend=kind
        )
    if plugin.driven_by == "audio":
        raise InputError(
            f"the {kind!r} back end is driven by audio but its renderer "
            f"({type(mouth).__name__}) is no lipcore.interfaces.AudioMouthRenderer, so the "
            "offline renderer cannot use it"
        )
    return AvatarRenderer(
        mouth, avatar.idle_frames(), float(avatar.manifest.idle.fps), backend=kind
    )


class AudioDrivenRenderer(AvatarRenderer):
    """Frames of a back end that renders the mouth from the audio (variant C, Wav2Lip).

    :meth:`prepare_audio` renders the utterance's mouth patches once (the back end's offline
    path: one mel, batched model runs); :meth:`frame` composites the patch of the audio time a
    video frame shows, placed by that idle frame's mouth track. Viseme weights are ignored:
    outside the speech the idle loop shows its own mouth.
    """

    def __init__(
        self,
        mouth: AudioMouthRenderer,
        idle_frames: Sequence[np.ndarray],
        fps: float,
        *,
        backend: str = "",
    ) -> None:
        super().__init__(mouth, idle_frames, fps, backend=backend)
        self.audio_mouth = mouth
        self._patches: dict[int, MouthPatch] = {}

    def prepare_audio(self, pcm: np.ndarray, sample_rate: int, plan: SpeechPlan) -> None:
        """Render the patches of ``pcm`` (the utterance's audio) for the video of ``plan``."""
        # Patch i shows audio time i/fps; video frame k shows k/fps − offset: frame k gets the
        # patch nearest its audio time, rendered against idle frame k (conditioning + track).
        shift = round(plan.audio_offset_ms * self.fps / 1000.0)
        patches = self.audio_mouth.render_audio(
            pcm.astype("<i2").tobytes(), sample_rate, idle_start=shift
        )
        self._patches = {int(p.frame) + shift: p for p in patches}

    def frame(self, k: int, weights: Mapping[str, float] | None = None) -> np.ndarray:
        i = k % len(self.idle_frames)
        idle = self.idle_frames[i]
        patch = self._patches.get(k)
        if patch is None:
            return idle
        return np.asarray(self.audio_mouth.composite(idle, patch, idle_index=i))


class _AvatarAs:
    """An avatar seen as if its manifest named another back end (for ``--backend``): the
    lipsync entry keeps only ``type``, so the back end looks for its default asset files."""

    def __init__(self, avatar: Any, kind: str) -> None:
        self._avatar = avatar
        self.lipsync_type = kind
        self.manifest = avatar.manifest.model_copy(update={"lipsync": {"type": kind}})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._avatar, name)


# ------------------------------------------------------------------ offline talking video


@dataclass(frozen=True)
class TalkResult:
    """What :func:`render_talk` wrote."""

    video: Path
    timings: Path
    frames: int
    duration_s: float
    audio_ms: float
    audio_offset_ms: float
    backend: str
    seconds: dict[str, float]  # wall time per stage: load_and_speak, render_encode


async def synthesize(
    engine: Engine,
    text: str,
    *,
    voice: str,
    tts: str | None = None,
    fps: float = 25.0,
) -> tuple[Utterance, np.ndarray, int]:
    """Speak ``text`` through the engine: the finished utterance (phonemes, viseme frames),
    its audio as mono int16 PCM placed by chunk pts, and the sample rate."""
    utt = await engine.utterance(text, voice=voice, tts=tts, fps=fps)
    chunks: list[tuple[float, bytes, int]] = []
    async for step in utt:
        if step.chunk.audio:
            chunks.append((step.chunk.pts_ms, step.chunk.audio, step.chunk.sample_rate))
    rate = chunks[0][2] if chunks else (utt.sample_rate or 22050)
    end = max((round(p * rate / 1000.0) + len(a) // 2 for p, a, _ in chunks), default=0)
    pcm = np.zeros(end, dtype=np.int16)
    for pts, audio, r in chunks:
        if r != rate:
            raise LipcoreError(f"the TTS source changed its sample rate mid-utterance ({r} Hz)")
        s = np.frombuffer(audio, dtype="<i2")
        at = round(pts * rate / 1000.0)
        pcm[at : at + len(s)] = s
    return utt, pcm, rate


def aligned_offset_ms(lead_in_ms: float, lead_ms: float, fps: float) -> float:
    """Where the audio starts in the video: ``lead_in_ms`` moved by at most half a frame so
    that every video frame shows a viseme frame exactly, not a blend of two.

    The engine's frames sit at ``j · 1000/fps − lead_ms`` on the audio timeline, video frame
    ``k`` shows audio time ``k · 1000/fps − offset``; they coincide when ``offset ≡ lead_ms``
    (mod one frame). Off that grid every frame would interpolate two viseme frames, which
    flattens one-frame peaks such as a bilabial closure."""
    period = 1000.0 / fps
    shift = (lead_ms - lead_in_ms) % period
    if shift > period / 2.0:
        shift -= period
    offset = lead_in_ms + shift
    if offset < 0.0:
        offset += period
    return offset


def render_talk(
    avatar: Avatar | Any,
    text: str,
    out: str | Path,
    *,
    engine: Engine | None = None,
    voice: str = "de",
    tts: str | None = None,
    backend: str | None = None,
    lead_in_ms: float = 500.0,
    tail_ms: float = 500.0,
    stop_ms: float | None = None,
    ramp_ms: float = 150.0,
    progress: Callable[[float], None] | None = None,
    renderer: AvatarRenderer | None = None,
) -> TalkResult:
    """Offline ``say``: speak ``text`` with ``avatar`` into an H.264 + AAC MP4 at ``out``.

    The video is the idle loop for ``lead_in_ms`` (moved by at most half a frame, see
    :func:`aligned_offset_ms`), the utterance (mouth on the viseme track,
    audio in the AAC track), and the idle loop for ``tail_ms`` after the audio. Next to the
    video, ``<out>.timings.json`` holds the phonemes with times, the viseme frames, the lead,
    the fps and the audio's offset in the video (what ``lipcore eval sync`` reads).
    ``stop_ms`` (utterance time) cuts the speech like a barge-in: audio fades out over
    ``ramp_ms`` and the mouth ramps to Rest.
    """
    import asyncio

    if lead_in_ms < 0 or tail_ms < 0:
        raise InputError("lead-in and tail must be zero or more milliseconds")
    if engine is None:
        from lipcore.engine import Engine

        engine = Engine()
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise InputError(f"the output video must be an .mp4 file, got {out.name!r}")
    t0 = time.perf_counter()
    if renderer is None:
        renderer = open_avatar_renderer(avatar, engine=engine, backend=backend)
    fps = renderer.fps
    utt, pcm, rate = asyncio.run(synthesize(engine, text, voice=voice, tts=tts, fps=fps))
    if not len(pcm) or not np.any(pcm):
        # A video of silence with a closed mouth is not what was asked for: say where it broke.
        source = tts or engine.settings.default_tts
        raise TTSError(
            f"the speech source {source!r} returned no audio for this text (voice {voice!r}); "
            "nothing was written. Try another voice or TTS source, or check the source's "
            "settings"
        )
    meta = {
        "text": text,
        "language": utt.language,
        "voice": utt.voice,
        "tts": tts or engine.settings.default_tts,
    }
    return _render_speech(
        avatar,
        renderer,
        out,
        frames=list(utt.frames),
        pcm=pcm,
        rate=rate,
        lead_ms=utt.lead_ms,
        viseme_fps=utt.fps,
        phonemes=utt.phonemes,
        meta=meta,
        lead_in_ms=lead_in_ms,
        tail_ms=tail_ms,
        stop_ms=stop_ms,
        ramp_ms=ramp_ms,
        progress=progress,
        t0=t0,
    )


def _render_speech(
    avatar: Avatar | Any,
    renderer: AvatarRenderer,
    out: Path,
    *,
    frames: list[VisemeFrame],
    pcm: np.ndarray,
    rate: int,
    lead_ms: float,
    viseme_fps: float,
    phonemes: Sequence[PhonemeTiming],
    meta: dict[str, Any],
    lead_in_ms: float,
    tail_ms: float,
    stop_ms: float | None,
    ramp_ms: float,
    progress: Callable[[float], None] | None,
    t0: float,
) -> TalkResult:
    """The part of ``say`` after the speech is known: frames (already shifted by the
    mouth's lead) and PCM → the MP4 and its timings file (``meta`` opens the latter)."""
    from lipcore.media import VideoWriter

    fps = renderer.fps
    audio_ms = len(pcm) * 1000.0 / rate
    if stop_ms is not None:
        # Barge-in: the audio fades out over the ramp and ends there.
        cut = max(0, min(len(pcm), round((stop_ms + ramp_ms) * rate / 1000.0)))
        start = max(0, min(cut, round(stop_ms * rate / 1000.0)))
        fade = np.linspace(1.0, 0.0, cut - start, dtype=np.float32)
        pcm = pcm[:cut].copy()
        pcm[start:cut] = (pcm[start:cut].astype(np.float32) * fade).astype(np.int16)
        audio_ms = len(pcm) * 1000.0 / rate
        frames = ramp_to_rest(frames, stop_ms, ramp_ms)
    last_pts = max((f.pts_ms for f in frames), default=0.0)
    # An audio-driven back end's patch i shows audio time i/fps exactly (no viseme lead): the
    # audio then starts on a frame boundary. With the viseme lead (20 ms) the onnx mouth sat
    # 20 ms early (offset 500 ms, patches from frame round(12.5) = 12, i.e. 480 ms).
    grid_lead = 0.0 if isinstance(renderer, AudioDrivenRenderer) else lead_ms
    offset_ms = aligned_offset_ms(lead_in_ms, grid_lead, fps)
    plan = SpeechPlan(
        fps=fps,
        audio_offset_ms=offset_ms,
        audio_ms=audio_ms,
        tail_ms=max(tail_ms, last_pts - audio_ms),
    )
    if isinstance(renderer, AudioDrivenRenderer):
        renderer.prepare_audio(pcm, rate, plan)
    lead = round(offset_ms * rate / 1000.0)
    total = round(plan.frames / fps * rate)
    track = np.zeros(max(total, lead + len(pcm)), dtype=np.int16)
    track[lead : lead + len(pcm)] = pcm
    track = track[:total]
    t1 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(
        out,
        fps,
        audio=track,
        sample_rate=rate,
        total_frames=plan.frames,
        progress=progress,
        crf=TALK_CRF,
        x264_params=TALK_X264_PARAMS,
        threaded=True,
        # FFmpeg's fast AAC coder: ~3× less CPU than twoloop, and on espeak speech at 96
        # kbit/s its waveform error is lower (SNR 40 dB against 27 dB).
        aac_coder="fast",
    ) as writer:
        # The writer's thread encodes while this one composites the next frame; frames reach
        # it as I420 with only the overlay's rectangle converted (see _I420Frames).
        yuv = _I420Frames(renderer.idle_frames, writer.frames_in_flight)
        n = renderer.loop_frames
        buffer = np.empty_like(renderer.idle_frames[0])
        for k, weights in renderer.schedule(frames, plan):
            if not yuv.even:
                writer.write(renderer.frame(k, weights))  # the writer keeps it: a new array
                continue
            rgb = renderer.frame_into(k, weights, buffer)
            if rgb is renderer.idle_frames[k % n]:
                writer.write_i420(yuv.frame(k % n, None))  # the bare idle frame: cached
            else:
                writer.write_i420(yuv.frame(k % n, rgb))
    t2 = time.perf_counter()
    timings_path = out.with_suffix(".timings.json")
    data = {
        "version": 1,
        **meta,
        "avatar_id": avatar.id,
        "backend": renderer.backend,
        "fps": fps,
        "viseme_fps": viseme_fps,
        "lead_ms": lead_ms,
        "audio_offset_ms": round(offset_ms, 3),
        "audio_ms": round(audio_ms, 3),
        "sample_rate": rate,
        "stop_ms": stop_ms,
        "ramp_ms": ramp_ms if stop_ms is not None else None,
        "video": {"file": out.name, "frames": plan.frames, "duration_s": plan.duration_s},
        "phonemes": [
            {"phoneme": p.phoneme, "start_ms": p.start_ms, "end_ms": p.end_ms, "word": p.word}
            for p in phonemes
        ],
        "visemes": [{"pts_ms": round(f.pts_ms, 3), "weights": _clean(f.weights)} for f in frames],
    }
    timings_path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", "utf-8")
    return TalkResult(
        video=out,
        timings=timings_path,
        frames=plan.frames,
        duration_s=plan.duration_s,
        audio_ms=audio_ms,
        audio_offset_ms=offset_ms,
        backend=renderer.backend,
        seconds={"load_and_speak": t1 - t0, "render_encode": t2 - t1},
    )


def render_talk_audio(
    avatar: Avatar | Any,
    audio: str | Path,
    out: str | Path,
    *,
    text: str | None = None,
    language: str = "en-us",
    engine: Engine | None = None,
    estimator: str | None = None,
    backend: str | None = None,
    lead_in_ms: float = 500.0,
    tail_ms: float = 500.0,
    progress: Callable[[float], None] | None = None,
    renderer: AvatarRenderer | None = None,
) -> TalkResult:
    """Offline ``say --audio``: ``avatar`` speaks the recording ``audio`` (WAV, MP3, OGG,
    M4A… through PyAV) into an MP4 at ``out`` whose audio track is the recording's.

    The mouth comes from the engine's audio viseme estimator (``estimator``, default the
    shipped model); with ``text`` its phonemes are aligned to the audio and mapped like a TTS
    source's timings (a text that does not fit the audio is an error, see
    :class:`lipcore.speech.audio_visemes.TextMismatchError`). The timings file is the one ``say``
    writes; its ``phonemes`` are the aligned ones (empty for audio only), and it records the
    estimator and the source file."""
    from lipcore.speech.audio_input import read_audio, shift_frames

    if lead_in_ms < 0 or tail_ms < 0:
        raise InputError("lead-in and tail must be zero or more milliseconds")
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise InputError(f"the output video must be an .mp4 file, got {out.name!r}")
    if engine is None:
        from lipcore.engine import Engine

        engine = Engine()
    t0 = time.perf_counter()
    pcm, rate = read_audio(audio)
    if renderer is None:
        renderer = open_avatar_renderer(avatar, engine=engine, backend=backend)
    fps = renderer.fps
    est = engine.audio_viseme_estimator(estimator)
    phonemes: list[PhonemeTiming] = []
    gap: float | None = None
    analyse = getattr(est, "analyse", None)
    if analyse is not None:
        result = analyse(pcm, sample_rate=rate, fps=fps, language=language, text=text)
        raw_frames, phonemes, gap = result.frames, result.phonemes, result.text_gap
    else:
        raw_frames = est.estimate(
            pcm.tobytes(), sample_rate=rate, fps=fps, language=language, text=text
        )
    lead_ms = engine.settings.lead_ms
    meta = {
        "text": text,
        "language": language,
        "voice": None,
        "tts": None,
        "source": "audio",
        "audio_file": Path(audio).name,
        "estimator": est.name,
        "text_gap": None if gap is None else round(gap, 3),
    }
    return _render_speech(
        avatar,
        renderer,
        out,
        frames=shift_frames(raw_frames, lead_ms),
        pcm=pcm,
        rate=rate,
        lead_ms=lead_ms,
        viseme_fps=fps,
        phonemes=phonemes,
        meta=meta,
        lead_in_ms=lead_in_ms,
        tail_ms=tail_ms,
        stop_ms=None,
        ramp_ms=150.0,
        progress=progress,
        t0=t0,
    )
