"""Fakes for tests and plugin authors.

* :class:`ReplayTTSSource` plays back pre-synthesised speech (audio chunks with phoneme
  timings) at real-time pace or as fast as possible, with a configurable first-audio delay and
  chunking. Record real speech once with :meth:`ReplayTTSSource.record`, or use
  :func:`synthetic_speech` (a deterministic buzz with one phoneme per letter) when no TTS is
  installed. The load benchmark uses it so that it measures the server, not a TTS.
* :class:`FailingTTSSource` fails mid-utterance with a :class:`~lipcore.errors.TTSError`.
* :class:`LipsyncBackendConformance` is the test bar every lipsync back end passes: a back
  end's own tests subclass it (lipcore's three back ends and third parties alike).
* :func:`inline_plugin` wraps factories (or ready instances) into a plugin object for
  ``get_plugin_manager(plugins=[...])``; :func:`testing_engine` builds an engine with it.

Register fakes in tests through inline plugins, never in the product::

    engine = testing_engine(tts={"replay": ReplayTTSSource(realtime=False)})
    utt = await engine.utterance("Hallo", voice="test", tts="replay")
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from lipcore.errors import TTSError
from lipcore.hookspecs import Register, hookimpl
from lipcore.interfaces import PhonemeTiming, TTSCapabilities, TTSChunk, TTSSource, Voice

__all__ = [
    "FailingTTSSource",
    "LipsyncBackendConformance",
    "ReplayTTSSource",
    "TimedTTSChunk",
    "inline_plugin",
    "rechunk",
    "synthetic_speech",
    "testing_engine",
    "write_test_avatar",
]

TEST_VOICES: tuple[Voice, ...] = (
    Voice(id="test", name="Test voice (English)", language="en"),
    Voice(id="test-de", name="Test voice (German)", language="de"),
)

# One IPA phoneme per letter, so that synthetic speech exercises every viseme class.
_LETTER_PHONEMES: dict[str, str] = {
    "a": "a", "b": "b", "c": "k", "d": "d", "e": "e", "f": "f", "g": "ɡ", "h": "h", "i": "i",
    "j": "j", "k": "k", "l": "l", "m": "m", "n": "n", "o": "o", "p": "p", "q": "k", "r": "ɹ",
    "s": "s", "t": "t", "u": "u", "v": "v", "w": "w", "x": "s", "y": "j", "z": "z",
    "ä": "ɛ", "ö": "ø", "ü": "y", "ß": "s",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class TimedTTSChunk(TTSChunk):
    """A chunk stamped with the ``time.perf_counter()`` at which the source yielded it, so a
    server can measure its own added latency (chunk in → frame on the socket), and with the
    moment it was due on the replay schedule (``due_at``; equals the start of the utterance
    when not replaying in real time), so a server can measure how late its event loop ran."""

    yielded_at: float = 0.0
    due_at: float = 0.0


def synthetic_speech(
    text: str,
    *,
    sample_rate: int = 16000,
    ms_per_letter: float = 70.0,
    pause_ms: float = 60.0,
    chunk_ms: float = 100.0,
    start_ms: float = 0.0,
    word_offset: int = 0,
) -> list[TTSChunk]:
    """Deterministic fake speech for ``text``: one phoneme per letter, a pause between words,
    audio a quiet 150 Hz buzz, cut into ``chunk_ms`` chunks (the last one ``final``)."""
    phonemes: list[PhonemeTiming] = []
    t = start_ms
    for w, word in enumerate(text.lower().split()):
        letters = [_LETTER_PHONEMES[c] for c in word if c in _LETTER_PHONEMES]
        for ph in letters:
            phonemes.append(PhonemeTiming(ph, t, t + ms_per_letter, word=word_offset + w))
            t += ms_per_letter
        t += pause_ms
    if not phonemes:
        return []
    n = round((t - start_ms) * sample_rate / 1000.0)
    tt = np.arange(n) / sample_rate
    audio = (2000 * np.sin(2 * math.pi * 150.0 * tt)).astype("<i2").tobytes()
    whole = TTSChunk(audio=audio, sample_rate=sample_rate, pts_ms=start_ms,
                     phonemes=tuple(phonemes), final=True)
    return rechunk([whole], chunk_ms=chunk_ms)


def rechunk(chunks: Sequence[TTSChunk], *, chunk_ms: float) -> list[TTSChunk]:
    """Re-cut speech into chunks of ``chunk_ms`` audio; each timing goes with the chunk in which
    it starts; the last chunk is ``final``."""
    if not chunks:
        return []
    rate = chunks[0].sample_rate
    audio = b"".join(c.audio for c in chunks)
    phonemes = sorted((p for c in chunks for p in c.phonemes), key=lambda p: p.start_ms)
    chars = sorted((ch for c in chunks for ch in c.chars), key=lambda c: c.start_ms)
    start = chunks[0].pts_ms
    step = max(2, int(rate * chunk_ms / 1000.0) * 2)
    out: list[TTSChunk] = []
    offsets = list(range(0, len(audio), step)) or [0]
    for i, off in enumerate(offsets):
        pts = start + off / 2 / rate * 1000.0
        end = start + min(off + step, len(audio)) / 2 / rate * 1000.0
        last = i == len(offsets) - 1
        out.append(
            TTSChunk(
                audio=audio[off : off + step],
                sample_rate=rate,
                pts_ms=pts,
                phonemes=tuple(p for p in phonemes if pts <= p.start_ms < end or
                               (last and p.start_ms >= end)),
                chars=tuple(c for c in chars if pts <= c.start_ms < end or
                            (last and c.start_ms >= end)),
                final=last,
            )
        )
    return out


class ReplayTTSSource(TTSSource):
    """Plays back pre-synthesised speech.

    ``speech``: the chunks to replay for every utterance (from :meth:`record`); ``None`` makes
    speech from the text with :func:`synthetic_speech` (streamed text is spoken delta by delta,
    so the first audio follows the first delta). ``realtime``: yield each chunk when its audio
    would be due (``first_audio_ms + pts_ms`` after the start) instead of at once.
    ``chunk_ms`` re-cuts the speech. Each chunk is a :class:`TimedTTSChunk`.
    """

    name: ClassVar[str] = "replay"
    capabilities: ClassVar[TTSCapabilities] = TTSCapabilities(
        timings="phonemes", streaming_input=True, sample_rates=(16000,)
    )

    def __init__(
        self,
        speech: Sequence[TTSChunk] | None = None,
        *,
        realtime: bool = False,
        first_audio_ms: float = 0.0,
        chunk_ms: float | None = None,
        voices: Sequence[Voice] = TEST_VOICES,
        ms_per_letter: float = 70.0,
    ) -> None:
        self.speech = list(speech) if speech is not None else None
        if self.speech is not None and chunk_ms is not None:
            self.speech = rechunk(self.speech, chunk_ms=chunk_ms)
        self.realtime = realtime
        self.first_audio_ms = first_audio_ms
        self.chunk_ms = chunk_ms or 100.0
        self._voices = tuple(voices)
        self.ms_per_letter = ms_per_letter
        self.started = 0  # utterances started (tests read these)
        self.closed = 0  # generators closed (finished or cancelled)
        self.texts: list[str] = []

    @classmethod
    async def record(
        cls, source: TTSSource, text: str, *, voice: str, **kwargs: Any
    ) -> ReplayTTSSource:
        """Synthesise ``text`` once with a real ``source`` and replay that for every utterance."""
        chunks = [c async for c in source.synthesize(text, voice=voice)]
        return cls(chunks, **kwargs)

    async def voices(self) -> Sequence[Voice]:
        return self._voices

    def synthesize(
        self,
        text: str | AsyncIterable[str],
        *,
        voice: str,
        options: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[TTSChunk]:
        return self._run(text)

    async def _pieces(self, text: str | AsyncIterable[str]) -> AsyncIterator[list[TTSChunk]]:
        """Speech to replay, in pieces as the text arrives (one piece for whole text)."""
        if self.speech is not None:
            if not isinstance(text, str):
                self.texts.append("".join([d async for d in text]))
            else:
                self.texts.append(text)
            yield self.speech
            return
        if isinstance(text, str):
            self.texts.append(text)
            yield synthetic_speech(text, chunk_ms=self.chunk_ms,
                                   ms_per_letter=self.ms_per_letter)
            return
        # Streamed text: speak complete words as they arrive, keep a partial word for later.
        pending, spoken, t, words = "", [], 0.0, 0
        async for delta in text:
            pending += delta
            head, sep, tail = pending.rpartition(" ")
            if not sep:
                continue
            pending = tail
            piece = synthetic_speech(head, chunk_ms=self.chunk_ms, start_ms=t,
                                     word_offset=words, ms_per_letter=self.ms_per_letter)
            spoken.append(head)
            words += len(head.split())
            if piece:
                t = piece[-1].end_ms
                yield [_not_final(c) for c in piece]
        spoken.append(pending)
        self.texts.append(" ".join(s for s in spoken if s))
        last = synthetic_speech(pending, chunk_ms=self.chunk_ms, start_ms=t,
                                word_offset=words, ms_per_letter=self.ms_per_letter)
        if not last:  # end the stream with an empty final chunk
            last = [TTSChunk(audio=b"", sample_rate=16000, pts_ms=t, final=True)]
        yield last

    async def _run(self, text: str | AsyncIterable[str]) -> AsyncIterator[TTSChunk]:
        self.started += 1
        t0 = time.perf_counter()
        try:
            if self.first_audio_ms:
                await asyncio.sleep(self.first_audio_ms / 1000.0)
            async for piece in self._pieces(text):
                for chunk in piece:
                    due = t0 + self.first_audio_ms / 1000.0
                    if self.realtime:
                        due += chunk.pts_ms / 1000.0
                        # Never early: the loop's timers may fire up to a millisecond early.
                        while (delay := due - time.perf_counter()) > 0:
                            await asyncio.sleep(delay)
                    yield TimedTTSChunk(
                        audio=chunk.audio, sample_rate=chunk.sample_rate, pts_ms=chunk.pts_ms,
                        phonemes=chunk.phonemes, chars=chunk.chars, final=chunk.final,
                        yielded_at=time.perf_counter(), due_at=due,
                    )
        finally:
            self.closed += 1


def _not_final(chunk: TTSChunk) -> TTSChunk:
    return TTSChunk(audio=chunk.audio, sample_rate=chunk.sample_rate, pts_ms=chunk.pts_ms,
                    phonemes=chunk.phonemes, chars=chunk.chars, final=False)


class FailingTTSSource(ReplayTTSSource):
    """Replays speech like :class:`ReplayTTSSource` but raises :class:`TTSError` after
    ``fail_after`` chunks (as a vendor connection dropping mid-utterance would)."""

    name: ClassVar[str] = "failing"

    def __init__(self, *args: Any, fail_after: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail_after = fail_after

    async def _run(self, text: str | AsyncIterable[str]) -> AsyncIterator[TTSChunk]:
        n = 0
        async for chunk in super()._run(text):
            if n >= self.fail_after:
                raise TTSError("test TTS failure: the connection to the speech vendor dropped")
            n += 1
            yield chunk


def _factory(obj: Any) -> Callable[..., Any]:
    """A factory for a registration: classes and callables as they are, instances returned."""
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "synthesize")):
        return obj  # type: ignore[no-any-return]
    return lambda **_: obj


def inline_plugin(
    *,
    tts_sources: Mapping[str, Any] | None = None,
    viseme_mappers: Mapping[str, Any] | None = None,
    lipsync_backends: Mapping[str, Any] | None = None,
    transports: Mapping[str, Any] | None = None,
    name: str = "lipcore.testing.inline",
) -> object:
    """A plugin object registering the given factories (or ready instances) by name, for
    ``get_plugin_manager(plugins=[inline_plugin(tts_sources={"replay": ReplayTTSSource()})])``.
    """
    tables = {
        "tts_sources": dict(tts_sources or {}),
        "viseme_mappers": dict(viseme_mappers or {}),
        "lipsync_backends": dict(lipsync_backends or {}),
        "transports": dict(transports or {}),
    }

    class _Plugin:
        __name__ = name

        @staticmethod
        @hookimpl
        def register_tts_sources(register: Register) -> None:
            for key, obj in tables["tts_sources"].items():
                register(key, _factory(obj))

        @staticmethod
        @hookimpl
        def register_viseme_mappers(register: Register) -> None:
            for key, obj in tables["viseme_mappers"].items():
                register(key, _factory(obj))

        @staticmethod
        @hookimpl
        def register_lipsync_backends(register: Register) -> None:
            for key, obj in tables["lipsync_backends"].items():
                register(key, _factory(obj))

        @staticmethod
        @hookimpl
        def register_transports(register: Register) -> None:
            for key, obj in tables["transports"].items():
                register(key, _factory(obj))

    return _Plugin()


def testing_engine(
    *,
    tts: Mapping[str, Any] | None = None,
    default_tts: str | None = None,
    plugins: Sequence[object] = (),
    load_entrypoints: bool = True,
    **settings: Any,
) -> Any:
    """An :class:`~lipcore.Engine` with the fakes registered through an inline plugin.

    ``tts`` defaults to ``{"replay": ReplayTTSSource(), "failing": FailingTTSSource()}``; the
    default TTS is the first one named unless ``default_tts`` says otherwise. Extra keyword
    arguments go to :class:`~lipcore.EngineSettings`."""
    from lipcore.engine import Engine, EngineSettings
    from lipcore.plugins import get_plugin_manager

    tts = dict(tts) if tts is not None else {
        "replay": ReplayTTSSource(), "failing": FailingTTSSource()
    }
    pm = get_plugin_manager(
        load_entrypoints=load_entrypoints, plugins=[inline_plugin(tts_sources=tts), *plugins]
    )
    default = default_tts or next(iter(tts), "espeak")
    return Engine(plugin_manager=pm, settings=EngineSettings(default_tts=default, **settings))


def write_test_avatar(root: Path, avatar_id: str = "a_prebuilt_test_avatar") -> Path:
    """A small but real prebuilt avatar under ``<root>/avatars/<avatar_id>/`` (H.264 idle.mp4
    of noise, PNG photo, mask and atlas, atlas JSON, mouth track, manifest), for servers in
    tests and benchmarks that need no face pipeline. Returns the avatar directory."""
    from PIL import Image

    from lipcore.media import write_mp4
    from lipcore.models import AvatarManifest

    d = Path(root) / "avatars" / avatar_id
    if (d / "manifest.json").is_file():
        return d
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    frames = [np.clip(rng.normal(128, 40, (96, 128, 3)), 0, 255).astype(np.uint8)
              for _ in range(25)]
    write_mp4(d / "idle.mp4", frames, 25.0)
    Image.fromarray(frames[0]).save(d / "photo.png")
    Image.fromarray(np.full((22, 36), 255, np.uint8)).save(d / "mask_mouth.png")
    Image.fromarray(np.zeros((88, 144, 4), np.uint8)).save(d / "atlas.png")
    roi = {"x": 46, "y": 60, "w": 36, "h": 22}
    (d / "atlas.json").write_text(json.dumps({"grid": {"cols": 4, "rows": 4},
                                              "classes": ["Rest"], "mask": "mask_mouth.png",
                                              "roi": roi}))
    (d / "mouth_track.json").write_text(json.dumps(
        {"fps": 25.0, "affines": [[1, 0, 0, 0, 1, 0]] * 25}))
    manifest = AvatarManifest.model_validate({
        "avatar_id": avatar_id, "created_at": "2026-11-25T09:00:00Z",
        "photo": {"file": "photo.png", "width": 128, "height": 96}, "roi": roi,
        "lipsync": {"type": "sprites", "atlas": "atlas.png", "atlas_json": "atlas.json",
                    "mask": "mask_mouth.png"},
        "idle": {"file": "idle.mp4", "fps": 25.0, "frames": 25, "seconds": 1.0,
                 "mouth_track": "mouth_track.json"},
    })
    (d / "manifest.json").write_text(manifest.model_dump_json(indent=2))
    return d


# Names starting with "test" are not tests (pytest would collect them when imported).
testing_engine.__test__ = False  # type: ignore[attr-defined]
write_test_avatar.__test__ = False  # type: ignore[attr-defined]


# --------------------------------------------------------------- lipsync back-end test avatars


def head_motion_affines(
    width: int, height: int, n: int = 8
) -> list[tuple[float, float, float, float, float, float]]:
    """``n`` photo → frame affines of a small periodic head motion (±1.5° roll about the image
    centre, 1 % scale, sub-pixel shifts): a mouth track for testing how a back end follows the
    head, without building an idle loop."""
    import cv2

    out = []
    for i in range(n):
        ph = 2 * math.pi * i / n
        m = cv2.getRotationMatrix2D(
            (width / 2, height / 2), 1.5 * math.sin(ph), 1.0 + 0.01 * math.cos(ph)
        )
        m[0, 2] += 2.3 * math.sin(ph) + 0.37
        m[1, 2] += 1.7 * math.cos(ph) - 0.61
        a = [float(v) for v in m.ravel()]
        out.append((a[0], a[1], a[2], a[3], a[4], a[5]))
    return out


def backend_test_avatar(
    directory: Path,
    photo: Any,
    mouth_model: Any,
    backend: Any,
    *,
    avatar_id: str,
    frames: int = 8,
) -> Any:
    """An :class:`lipcore.avatar.store.Avatar` for testing a lipsync back end: ``backend``'s
    real assets built from ``mouth_model`` into ``directory``, and a head-motion mouth track of
    ``frames`` affines (no idle video is written; use :func:`moved_frames` for what it would
    show)."""
    from lipcore.avatar.store import Avatar
    from lipcore.models import AvatarManifest, IdleInfo, MouthTrack, PhotoInfo

    directory = Path(directory)
    mouth_model.save(directory)
    assets = backend.build_assets(mouth_model, directory)
    h, w = photo.shape[:2]
    track = MouthTrack(fps=25.0, affines=head_motion_affines(w, h, frames))
    manifest = AvatarManifest(
        avatar_id=avatar_id,
        created_at="2026-01-01T00:00:00+00:00",
        photo=PhotoInfo(file="photo.jpg", width=w, height=h),
        roi=mouth_model.roi,
        lipsync={"type": backend.type, **assets},
        idle=IdleInfo(
            file="idle.mp4", fps=25.0, frames=frames, seconds=frames / 25.0, mouth_track="t.json"
        ),
    )
    return Avatar(directory, manifest, track)


def moved_frames(photo: Any, affines: Sequence[Sequence[float]]) -> list[Any]:
    """The photo moved by each affine (what an idle loop with that mouth track shows, mouth at
    rest)."""
    import cv2

    h, w = photo.shape[:2]
    return [
        cv2.warpAffine(photo, np.asarray(a, np.float64).reshape(2, 3), (w, h),
                       flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        for a in affines
    ]  # fmt: skip


# ------------------------------------------------- measuring where a back end puts the mouth


def roi_coords(matrix: Any, shape: tuple[int, ...]) -> tuple[Any, Any]:
    """For every frame pixel, the ROI coordinate (u, v) it shows under ``matrix`` (ROI → frame)."""
    import cv2

    inv = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    u = inv[0, 0] * xx + inv[0, 1] * yy + inv[0, 2]
    v = inv[1, 0] * xx + inv[1, 1] * yy + inv[1, 2]
    return u, v


def change_map(rendered: Any, base: Any) -> Any:
    """How much the overlay changed each pixel (sum over channels of |rendered − base|)."""
    return np.abs(rendered.astype(np.float64) - base.astype(np.float64)).sum(axis=2)


def centroid(weights: Any) -> Any:
    """(x, y) centroid of a non-negative weight map."""
    yy, xx = np.mgrid[0 : weights.shape[0], 0 : weights.shape[1]].astype(np.float64)
    s = weights.sum()
    return np.array([(weights * xx).sum() / s, (weights * yy).sum() / s])


def apply_affine(affine: Sequence[float], p: Any) -> Any:
    """The point ``p`` moved by a 2×3 affine given as six numbers."""
    m = np.asarray(affine, dtype=np.float64).reshape(2, 3)
    return m[:, :2] @ p + m[:, 2]


@dataclass(frozen=True)
class PlacementCheck:
    """How exactly a renderer places the mouth by the mouth track (see
    :func:`check_placement`)."""

    worst_shift_px: float  # centroid of the change vs. the still render moved by the track
    worst_relative_error: float  # pixel error / the error of a half-pixel misplacement
    least_off_shift_px: float  # centroid shift the half-pixel misplacement shows (the scale)


def check_placement(
    renderer: Any,
    still: Any,
    open_with_track: Callable[[list[tuple[float, ...]]], Any],
    photo: Any,
    idle_frames: Sequence[Any],
    affines: Sequence[Sequence[float]],
    weights: Mapping[str, float],
) -> PlacementCheck:
    """Compare each idle frame's render with the still (identity-track) render of the photo
    moved by that frame's affine; for scale, also render with the affine half a pixel off
    (``open_with_track([affine])`` opens the back end's renderer on a one-frame track)."""
    import cv2

    base = still.render(photo, idle_index=0, weights=dict(weights))
    h, w = photo.shape[:2]
    roi = renderer.roi
    rx, ry, rw, rh = (roi.x, roi.y, roi.w, roi.h) if hasattr(roi, "x") else roi
    from lipcore.avatar.warp import patch_to_frame_affine

    worst_shift, worst_rel, least_off = 0.0, 0.0, math.inf
    for i, idle in enumerate(idle_frames):
        affine = tuple(float(a) for a in affines[i])
        moved = renderer.render(idle, idle_index=i, weights=dict(weights))
        expect = cv2.warpAffine(base, np.asarray(affine).reshape(2, 3), (w, h),
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)  # fmt: skip
        ce = centroid(change_map(expect, idle))
        worst_shift = max(worst_shift, float(np.hypot(*(centroid(change_map(moved, idle)) - ce))))
        u, v = roi_coords(patch_to_frame_affine(affine, rx, ry), idle.shape)
        inside = (u >= 2) & (u <= rw - 3) & (v >= 2) & (v <= rh - 3)
        err = float(np.abs(moved.astype(float) - expect)[inside].mean())
        off = (*affine[:2], affine[2] + 0.5, *affine[3:])
        wrong = open_with_track([off]).render(idle, idle_index=0, weights=dict(weights))
        err_off = float(np.abs(wrong.astype(float) - expect)[inside].mean())
        worst_rel = max(worst_rel, err / err_off)
        least_off = min(least_off, float(np.hypot(*(centroid(change_map(wrong, idle)) - ce))))
    return PlacementCheck(worst_shift, worst_rel, least_off)


def landmark_follow_errors(
    renderer: Any,
    still: Any,
    analyzer: Any,
    photo: Any,
    idle_frames: Sequence[Any],
    affines: Sequence[Sequence[float]],
    weights: Mapping[str, float],
    frames: Sequence[int],
) -> list[float]:
    """Mean distance (px) between MediaPipe's lip landmarks on each talking idle frame and the
    still render's lip landmarks moved by that frame's affine: whether the mouth swims."""
    lips = [13, 14, 61, 291, 0, 17, 78, 308]
    ref = analyzer.analyze(still.render(photo, idle_index=0, weights=dict(weights)))
    ref_xy = ref.landmarks[lips, :2]
    errs = []
    for i in frames:
        moved = renderer.render(idle_frames[i], idle_index=i, weights=dict(weights))
        got = analyzer.analyze(moved).landmarks[lips, :2]
        want = np.array([apply_affine(affines[i], p) for p in ref_xy])
        errs.append(float(np.hypot(*(got - want).T).mean()))
    return errs


# ------------------------------------------------------------- the back-end conformance suite

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


class LipsyncBackendConformance:
    """The bar every lipsync back end passes: subclass it in the back end's tests.

    ::

        class TestFlatMouthConformance(LipsyncBackendConformance):
            kind = "flatmouth"
            aliases = ("flat-colour",)
            distribution = "lipcore-flatmouth"

    The subclass (or its conftest) provides the fixtures ``backend`` (an instance, configured
    to run), ``avatar`` (an avatar built with it, e.g. :func:`backend_test_avatar`),
    ``idle_frames`` (the frames its mouth track belongs to) and ``photo`` (the avatar's photo,
    RGB). What it checks: registration under the kind (and its aliases, its distribution's
    entry point); the declarations the server relies on (client assets that are real built
    files, a web renderer module that exists); the renderer's declared type; rendering from
    weights (viseme-driven: Rest leaves no seam, an open mouth changes the mouth only, frame
    indices wrap, bad weights are clear errors) or from audio (audio-driven: streamed patches
    equal the offline ones); clear errors for an empty mouth track and missing assets; and,
    where ``placement_tolerance_px`` is set, placement by the mouth track to that accuracy.
    """

    kind: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]] = ()
    distribution: ClassVar[str | None] = None
    #: weights that visibly open the mouth
    open_weights: ClassVar[Mapping[str, float]] = {"AI": 1.0}
    #: at Rest, the most a pixel near the ROI's border may change (grey levels)
    rest_seam_max_levels: ClassVar[float] = 3.0
    #: at Rest, the most a pixel inside the ROI may get darker
    rest_darkening_max_levels: ClassVar[float] = 5.0
    #: where the overlay must sit, in px (None: the back end does not promise sub-pixel placement)
    placement_tolerance_px: ClassVar[float | None] = None

    # -- hooks a subclass may override ----------------------------------------------------

    def with_track(self, avatar: Any, affines: Sequence[Sequence[float]]) -> Any:
        """``avatar`` with another mouth track (same directory)."""
        from lipcore.avatar.store import Avatar
        from lipcore.models import MouthTrack

        track = MouthTrack.model_validate(
            {"fps": avatar.mouth_track.fps, "affines": [list(a) for a in affines]}
        )
        return Avatar(avatar.directory, avatar.manifest, track)

    def copy_avatar(self, avatar: Any, dest: Path) -> Any:
        """A copy of ``avatar``'s directory at ``dest``, loaded the same way."""
        import shutil

        from lipcore.avatar.store import Avatar

        shutil.copytree(avatar.directory, dest)
        return Avatar(dest, avatar.manifest, avatar.mouth_track)

    # -- registration and declarations ----------------------------------------------------

    def test_registered_under_its_kind(self, backend: Any) -> None:
        from lipcore.engine import Engine
        from lipcore.plugins import PluginRegistry, get_plugin_manager

        registry = PluginRegistry(get_plugin_manager())
        reg = registry.get("lipsync_backends", self.kind)
        assert reg.name == self.kind
        assert type(backend).type == self.kind, "the back end's `type` is its registered kind"
        for alias in self.aliases:
            assert registry.get("lipsync_backends", alias) is reg
            assert Engine().lipsync_kind(alias) == self.kind  # what a manifest gets written
        if self.distribution is not None:
            import importlib.metadata

            assert reg.distribution == self.distribution
            eps = importlib.metadata.entry_points(group="lipcore")
            assert any(ep.dist is not None and ep.dist.name == self.distribution for ep in eps)

    def test_declared_client_assets_are_built_files(self, backend: Any, avatar: Any) -> None:
        lipsync = dict(avatar.manifest.lipsync)
        assert lipsync["type"] == self.kind
        root = Path(avatar.directory).resolve()
        for key, rel in lipsync.items():
            if key != "type" and isinstance(rel, str):
                path = (root / rel).resolve()
                assert path.is_relative_to(root) and path.is_file(), (key, rel)
        for key, field_name in type(backend).client_assets.items():
            assert key in lipsync, f"client asset {key!r} is declared but not built"
            assert field_name == "" or field_name.endswith("_url"), field_name

    def test_web_renderer_module_exists(self, backend: Any) -> None:
        module = type(backend).web_renderer
        if module is None:
            return
        static = backend.static_dir()
        assert static is not None, "a web renderer needs the back end's static_dir()"
        text = (Path(static) / module).read_text(encoding="utf-8")
        assert "export default" in text, "a web renderer module has a default export"

    def test_open_renderer_gives_the_declared_interface(self, backend: Any, avatar: Any) -> None:
        from lipcore.interfaces import AudioMouthRenderer, MouthRenderer

        renderer = backend.open_renderer(avatar)
        assert isinstance(renderer, MouthRenderer)
        assert isinstance(renderer, AudioMouthRenderer) == (backend.driven_by == "audio")

    # -- rendering --------------------------------------------------------------------------

    def test_rest_leaves_no_seam_and_open_changes_the_mouth(
        self, backend: Any, avatar: Any, idle_frames: Sequence[Any]
    ) -> None:
        if backend.driven_by != "visemes":
            return
        from lipcore.avatar.warp import patch_to_frame_affine

        renderer = backend.open_renderer(avatar)
        roi = avatar.manifest.roi
        changed = 0
        for i, idle in enumerate(idle_frames):
            before = idle.copy()
            rest = renderer.render(idle, idle_index=i, weights={})
            assert np.array_equal(idle, before), "render must not change its input frame"
            assert rest.shape == idle.shape and rest.dtype == np.uint8
            m = patch_to_frame_affine(avatar.mouth_track.affines[i], roi.x, roi.y)
            u, v = roi_coords(m, idle.shape)
            outer = (u > -4) & (u < roi.w + 3) & (v > -4) & (v < roi.h + 3)
            inner = (u > 4) & (u < roi.w - 5) & (v > 4) & (v < roi.h - 5)
            inside = (u >= 0) & (u <= roi.w - 1) & (v >= 0) & (v <= roi.h - 1)
            signed = rest.astype(np.int16) - idle.astype(np.int16)
            err = np.abs(signed).max(axis=2)
            assert float(err[outer & ~inner].max()) <= self.rest_seam_max_levels
            assert float(-signed[inside].min(initial=0)) <= self.rest_darkening_max_levels
            assert np.array_equal(rest[~(outer | inside)], idle[~(outer | inside)])
            opened = renderer.render(idle, idle_index=i, weights=dict(self.open_weights))
            diff = np.abs(opened.astype(np.int16) - idle.astype(np.int16)).max(axis=2)
            assert not diff[~(outer | inside)].any(), "an open mouth changes only the mouth"
            changed += int(diff[inside].max() > 20)
        assert changed == len(idle_frames), "an open mouth shows on every frame"
        n = len(avatar.mouth_track.affines)
        a = renderer.render(idle_frames[1], idle_index=1, weights=dict(self.open_weights))
        b = renderer.render(idle_frames[1], idle_index=1 + 2 * n, weights=dict(self.open_weights))
        assert np.array_equal(a, b), "idle indices wrap around the loop"

    def test_unknown_viseme_class_is_a_clear_error(
        self, backend: Any, avatar: Any, idle_frames: Sequence[Any]
    ) -> None:
        if backend.driven_by != "visemes":
            return
        import pytest

        from lipcore.errors import LipcoreError

        renderer = backend.open_renderer(avatar)
        for weights, word in (({"Ah": 0.5}, "'Ah'"), ({"AI": float("nan")}, "'AI'"),
                              ({"AI": 1.5}, "'AI'")):  # fmt: skip
            with pytest.raises(LipcoreError) as info:
                renderer.render(idle_frames[0], idle_index=0, weights=weights)
            assert word in str(info.value)

    def test_streamed_patches_equal_the_offline_ones(
        self, backend: Any, avatar: Any, idle_frames: Sequence[Any]
    ) -> None:
        if backend.driven_by != "audio":
            return
        renderer = backend.open_renderer(avatar)
        rng = np.random.default_rng(1)
        pcm = (rng.normal(0, 3000, 8000).clip(-32768, 32767).astype("<i2")).tobytes()
        offline = list(renderer.render_audio(pcm, 16000))
        stream = renderer.stream(sample_rate=16000)
        streamed = []
        for start in range(0, len(pcm), 1234 * 2):
            streamed += stream.push(pcm[start:start + 1234 * 2], start / 2 / 16.0)
        streamed += stream.finish()
        assert len(streamed) == len(offline) > 0
        for s, o in zip(streamed, offline, strict=True):
            assert s.frame == o.frame and s.idle_index == o.idle_index
            assert float(np.abs(s.rgb.astype(float) - o.rgb.astype(float)).max()) <= 2.0
        out = renderer.composite(idle_frames[0], offline[0], idle_index=0)
        assert np.asarray(out).shape == idle_frames[0].shape

    # -- bad avatars ------------------------------------------------------------------------

    def test_empty_mouth_track_is_a_clear_error(self, backend: Any, avatar: Any) -> None:
        import pytest

        from lipcore.errors import LipcoreError

        with pytest.raises(LipcoreError):
            backend.open_renderer(self.with_track(avatar, []))

    def test_missing_assets_are_a_clear_error(
        self, backend: Any, avatar: Any, tmp_path: Path
    ) -> None:
        import pytest

        from lipcore.errors import LipcoreError

        broken = self.copy_avatar(avatar, tmp_path / "broken")
        for key, rel in dict(avatar.manifest.lipsync).items():
            if key != "type" and isinstance(rel, str):
                (Path(broken.directory) / rel).unlink(missing_ok=True)
        with pytest.raises(LipcoreError):
            backend.open_renderer(broken)

    # -- placement --------------------------------------------------------------------------

    def test_overlay_follows_the_mouth_track(
        self, backend: Any, avatar: Any, idle_frames: Sequence[Any], photo: Any
    ) -> None:
        if self.placement_tolerance_px is None or backend.driven_by != "visemes":
            return
        check = check_placement(
            backend.open_renderer(avatar),
            backend.open_renderer(self.with_track(avatar, [_IDENTITY])),
            lambda track: backend.open_renderer(self.with_track(avatar, track)),
            photo,
            idle_frames,
            avatar.mouth_track.affines,
            {"AI": 0.8, "E": 0.2},
        )
        # Half a pixel off reads > 0.3 px (the scale of the measurement).
        assert check.least_off_shift_px > 0.3, check
        assert check.worst_shift_px < self.placement_tolerance_px, check
        assert check.worst_relative_error < 0.25, check
