"""Live server-rendered video: audio in as it comes, finished frames out, paired with the audio.

A :class:`LiveRenderer` turns a stream of speech audio (any sample rate, any channel count)
and, where the speech source has them, its timings (phonemes, characters or words with start
and end) into video frames at the avatar's fps, each paired with exactly the audio it shows::

    from lipcore.live import LiveRenderer, WordTiming

    live = LiveRenderer("avatars/grace", sample_rate=24000, video_format="rgba")
    live.push_audio(pcm, sample_rate=22050, channels=1, words=[WordTiming("hello", 0, 310)])
    live.end_segment()                       # the utterance's audio is complete
    while True:
        frame = live.pull()                  # LiveFrame: video (+ audio while speaking)
        sink.video(frame.video)
        if frame.audio is not None:
            sink.audio(frame.audio)          # frame.audio holds sample_rate/fps samples
        if frame.segment_end:
            ...                              # the utterance has played out

The contract a downstream synchronizer relies on (LiveKit's ``AVSynchronizer`` has no
timestamps, so lip sync holds by back-pressure alone):

* **One video frame per** ``sample_rate / fps`` **audio samples.** While speaking, every frame
  carries the next ``samples_for(k)`` samples (``round((k+1)·sr/fps) − round(k·sr/fps)``: no
  drift at rates that do not divide evenly); the last frame of an utterance is padded with
  silence to a whole frame, so the audio of the next utterance starts on a frame boundary.
* **The mouth leads the audio by** ``lead_ms`` (the engine's 20 ms by default): each utterance
  starts with that much silence, so video frame ``k`` of an utterance shows the viseme frame
  ``k`` of the mapper's grid exactly (one-frame closures are shown whole, never blended).
* **Silence is the idle loop**: :meth:`LiveRenderer.pull` with nothing to say returns the
  next idle frame with ``audio=None``. While an utterance waits for more input (the TTS is
  slower than real time, or the mapper's look-ahead has not arrived) it returns a *hold*
  frame (idle loop, mouth as last shown, no audio): the video keeps its rate and the audio
  resumes where it stopped, still paired.
* :meth:`LiveRenderer.clear` (barge-in) drops every queued sample at once: no frame carries
  audio of the cleared speech, and the mouth ramps from the shape it showed to Rest over
  ``ramp_ms`` (100–200 ms, :func:`lipcore.render.ramp_to_rest`).

**Timings.** Phonemes go straight to the engine's viseme mapper; characters and words go
through its grapheme-to-phoneme path (a word's characters are spread over its span, then the
mapper's G2P spreads the word's phonemes). Timings are milliseconds from the first sample of
the utterance's audio. An utterance that has brought no timings yet is driven by an
:class:`~lipcore.interfaces.AudioVisemeEstimator`: ``estimator=``, else the engine's
audio-only estimator (the shipped model, docs/audio-visemes.md), else, with none installed,
:class:`EnergyVisemeEstimator`, a documented fallback driven by the audio's loudness.

**Frames.** The decoded idle loop and the back end's mouth renderer are shared by every
session of the same avatar and back end (:func:`shared_avatar`); a session owns only a few
frame buffers. Nothing is encoded here: frames leave as RGBA, I420 or RGB arrays (I420 and
RGBA convert only the rectangle the mouth changed; the idle frames' conversions are cached
per avatar). Frames are views into a small ring of buffers: use (or copy) one before pulling
``buffers`` more.

The audio-driven back end (Wav2Lip) renders mouth patches from the padded audio itself; the
small adapter :class:`_AudioDrivenMouth` is the one place that knows its streaming API.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt

from lipcore.errors import InputError, PluginNotFoundError
from lipcore.interfaces import (
    AudioVisemeEstimator,
    AudioVisemeStream,
    CharTiming,
    PhonemeTiming,
    VisemeFrame,
    VisemeStream,
)
from lipcore.render import AudioDrivenRenderer, AvatarRenderer, open_avatar_renderer, ramp_to_rest

if TYPE_CHECKING:
    from lipcore.avatar.store import Avatar
    from lipcore.engine import Engine

__all__ = [
    "EnergyVisemeEstimator",
    "LiveFrame",
    "LiveRenderer",
    "SharedAvatar",
    "VideoFormat",
    "WordTiming",
    "clear_avatar_cache",
    "default_estimator",
    "shared_avatar",
    "words_from_phonemes",
    "words_to_chars",
]

VideoFormat = Literal["rgba", "i420", "rgb"]
U8 = npt.NDArray[np.uint8]
I16 = npt.NDArray[np.int16]


@dataclass(frozen=True, slots=True)
class WordTiming:
    """One spoken word with its span, in ms from the start of the utterance's audio."""

    word: str
    start_ms: float
    end_ms: float


@dataclass(frozen=True, slots=True)
class LiveFrame:
    """One video frame and, while speaking, the audio it shows.

    ``video``: H×W×4 RGBA, (H·3/2)×W I420 (BT.709, as :func:`lipcore.media.rgb_to_i420`) or
    H×W×3 RGB; a view into the renderer's ring of buffers (or the shared idle cache): do not
    write into it. ``audio``: mono int16 at the renderer's ``sample_rate``, exactly
    :meth:`LiveRenderer.samples_for` ``(index)`` samples, or ``None`` (idle, hold, ramp, the
    mouth's tail after the audio). ``segment_end``: this frame carries the last audio of an
    utterance. ``weights``: the viseme weights the mouth was rendered with (``None``: the bare
    idle frame, or an audio-driven patch)."""

    index: int
    video: U8
    audio: I16 | None
    segment_end: bool = False
    weights: Mapping[str, float] | None = None

    @property
    def speech(self) -> bool:
        return self.audio is not None


# ------------------------------------------------------------------ energy-driven fallback


class EnergyVisemeEstimator(AudioVisemeEstimator):
    """Visemes from loudness and one spectral cue: the fallback when the speech source gives
    no timings and no audio-only estimator is installed.

    Per video frame, a 30 ms window centred on the frame's time gives two numbers: its RMS
    level against a running speech peak (which decays slowly, so a quiet voice still opens the
    mouth), and the share of its energy below 300 Hz. Closed lips (/m b p/, and /n d/ whose
    mouth is nearly closed too) leave mostly the voice's low "murmur"; open vowels put most of
    their energy above it (measured on espeak-ng speech: ≥ 0.5 below 300 Hz for /m b n/,
    ≤ 0.4 for vowels).

    * loud and not murmur-like → the mouth opens in proportion (``AI`` with some ``E``);
    * murmur-like, or a dip while speaking → ``MBP`` (the lips close: on a smiling photo Rest
      would show the teeth). A dip is a quiet window within 250 ms of voice, or a quiet 10 ms
      anywhere in the frame's own span (a stop's silence, ~30 ms for espeak's /p/, can fall
      between two frame centres); so stops like /t k/ close the lips too;
    * longer silence → Rest (the photo's own mouth).

    It cannot round the lips for /u o/ nor tell /m/ from /n/: it moves the jaw with the voice,
    which reads as talking but is less exact than timings (see docs/benchmarks.md).
    Look-ahead: half a frame period (20 ms at 25 fps)."""

    # Not the registered "energy" estimator (a plain energy-to-jaw baseline for benchmarks):
    # this one also closes the lips, and is only the live renderer's last resort.
    name: ClassVar[str] = "loudness"
    lookahead_ms: ClassVar[float] = 20.0  # half a frame at 25 fps (the span searched for dips)

    def stream(
        self,
        *,
        sample_rate: int,
        fps: float,
        language: str | None = None,
        text: str | None = None,
    ) -> AudioVisemeStream:
        return _EnergyStream(sample_rate=sample_rate, fps=fps)


class _EnergyStream(AudioVisemeStream):
    WINDOW_MS = 30.0
    RANGE_DB = 24.0  # from the peak down to closed
    FLOOR_DBFS = -55.0  # never count this as speech, however quiet the voice
    HANGOVER_MS = 250.0  # a dip this soon after voice is a closure, not a pause

    def __init__(self, *, sample_rate: int, fps: float) -> None:
        if sample_rate <= 0 or not (1.0 <= fps <= 240.0):
            raise InputError(f"energy estimator: bad sample rate {sample_rate} or fps {fps}")
        self.sr = sample_rate
        self.fps = fps
        self._pcm = np.zeros(0, dtype=np.float32)
        self._offset = 0  # absolute sample index of self._pcm[0]
        self._next = 0
        self._half = round(self.WINDOW_MS / 2000.0 * sample_rate)
        # A stop's silence can be shorter than a frame period (espeak's /p/: ~30 ms) and fall
        # between two frame centres: each frame also looks for a dip anywhere in its own span.
        self._span = round(sample_rate / fps / 2.0)
        self._sub = max(1, round(0.010 * sample_rate))
        self._reach = max(self._half, self._span)
        self._peak_db = -30.0
        self._last_voiced_ms = -math.inf
        self._finished = False

    def _centre(self, j: int) -> int:
        return round(j * self.sr / self.fps)

    def push(self, pcm: bytes) -> list[VisemeFrame]:
        if self._finished:
            raise InputError("this energy stream is finished; open a new one")
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
        self._pcm = np.concatenate([self._pcm, x])
        return self._emit(final=False)

    def finish(self) -> list[VisemeFrame]:
        if self._finished:
            return []
        out = self._emit(final=True)
        self._finished = True
        out.append(VisemeFrame(pts_ms=self._next * 1000.0 / self.fps, weights={}))
        return out

    def _emit(self, *, final: bool) -> list[VisemeFrame]:
        out: list[VisemeFrame] = []
        end = self._offset + len(self._pcm)
        while True:
            c = self._centre(self._next)
            if c >= end and final:
                break
            if c + self._reach > end and not final:
                break
            lo = max(0, c - self._half - self._offset)
            hi = max(lo, min(len(self._pcm), c + self._half - self._offset))
            win = self._pcm[lo:hi]
            rms = float(np.sqrt(np.mean(win * win))) if len(win) else 0.0
            out.append(self._frame(self._next, rms, self._murmur(win), self._dip(c)))
            self._next += 1
        # Keep only what the next window needs.
        keep_from = max(0, self._centre(self._next) - self._reach - self._offset)
        if keep_from:
            self._pcm = self._pcm[keep_from:]
            self._offset += keep_from
        return out

    def _dip(self, c: int) -> float:
        """The quietest 10 ms (RMS) within the frame's own span around sample ``c``."""
        lo = max(0, c - self._span - self._offset)
        hi = min(len(self._pcm), c + self._span - self._offset)
        seg = self._pcm[lo:hi]
        n = self._sub
        if len(seg) < n:
            return math.inf
        steps = range(0, len(seg) - n + 1, max(1, n // 2))
        return min(float(np.sqrt(np.mean(seg[i : i + n] ** 2))) for i in steps)

    def _murmur(self, win: npt.NDArray[np.float32]) -> float:
        """Share of the window's energy below 300 Hz."""
        if len(win) < 16:
            return 0.0
        spec = np.abs(np.fft.rfft(win * np.hanning(len(win)))) ** 2
        cut = int(300.0 * len(win) / self.sr) + 1
        total = float(spec.sum())
        return float(spec[:cut].sum()) / total if total > 0 else 0.0

    def _frame(self, j: int, rms: float, murmur: float = 0.0, dip: float = math.inf) -> VisemeFrame:
        t = j * 1000.0 / self.fps
        db = 20.0 * math.log10(max(rms, 1e-9))
        # The peak follows a louder voice at once and relaxes by ~3 dB per second.
        self._peak_db = max(db, self._peak_db - 3.0 / self.fps)
        level = (db - (self._peak_db - self.RANGE_DB)) / self.RANGE_DB
        weights: dict[str, float] = {}
        if db > self.FLOOR_DBFS and level > 0.15:
            # Voiced just before (not the onset after a pause, whose span holds silence too).
            recent = t - self._last_voiced_ms <= 1000.0 / self.fps + 1e-6
            self._last_voiced_ms = t
            closed = min(1.0, max(0.0, (murmur - 0.45) / 0.15))
            dip_db = 20.0 * math.log10(max(dip, 1e-9))
            if recent and dip_db < self._peak_db - self.RANGE_DB:
                closed = 1.0  # a stop's silence inside this frame's span
            o = min(1.0, (level - 0.15) / 0.75) * (1.0 - closed)
            if closed > 0.02:
                weights["MBP"] = closed
            if o > 0.02:
                weights.update({"AI": 0.75 * o, "E": 0.25 * o})
        elif t - self._last_voiced_ms <= self.HANGOVER_MS:
            weights = {"MBP": 1.0}
        return VisemeFrame(pts_ms=t, weights=weights)


# ------------------------------------------------------------------ shared per avatar


class SharedAvatar:
    """What every live session of one avatar (and back end) shares: the decoded idle loop,
    the back end's mouth renderer, and the idle frames converted to RGBA and I420 (made on
    first use, kept for the process)."""

    def __init__(self, avatar: Avatar, renderer: AvatarRenderer) -> None:
        self.avatar = avatar
        self.renderer = renderer
        self.fps = renderer.fps
        self.idle: list[U8] = [np.ascontiguousarray(f[:, :, :3]) for f in renderer.idle_frames]
        self.width, self.height = renderer.size
        self._rgba: dict[int, U8] = {}
        self._i420: dict[int, U8] = {}
        self._lock = threading.Lock()

    @property
    def audio_driven(self) -> bool:
        return isinstance(self.renderer, AudioDrivenRenderer)

    @property
    def backend(self) -> str:
        return self.renderer.backend

    def idle_rgba(self, i: int) -> U8:
        hit = self._rgba.get(i)
        if hit is None:
            import cv2

            hit = np.asarray(cv2.cvtColor(self.idle[i], cv2.COLOR_RGB2RGBA), dtype=np.uint8)
            hit.setflags(write=False)
            with self._lock:
                self._rgba[i] = hit
        return hit

    def idle_i420(self, i: int) -> U8:
        hit = self._i420.get(i)
        if hit is None:
            from lipcore.media import rgb_to_i420

            hit = np.asarray(rgb_to_i420(self.idle[i]), dtype=np.uint8)
            hit.setflags(write=False)
            with self._lock:
                self._i420[i] = hit
        return hit

    def memory_bytes(self) -> int:
        """Bytes held by the decoded and converted idle frames."""
        frames = [*self.idle, *self._rgba.values(), *self._i420.values()]
        return sum(int(f.nbytes) for f in frames)


_CACHE: dict[tuple[str, str], SharedAvatar] = {}
_CACHE_LOCK = threading.Lock()


def shared_avatar(
    avatar: Avatar | str | Path, *, engine: Engine | None = None, backend: str | None = None
) -> SharedAvatar:
    """The :class:`SharedAvatar` of ``avatar`` (a loaded avatar or its directory), loaded and
    decoded once per process for each back end. Raises
    :class:`lipcore.avatar.store.AvatarLoadError` for a directory that is not an avatar and
    :class:`lipcore.errors.PluginNotFoundError` for a back end that is not installed."""
    from lipcore.avatar.store import Avatar, load_avatar

    if not isinstance(avatar, Avatar):
        avatar = load_avatar(Path(avatar))
    kind = backend or avatar.lipsync_type
    key = (str(Path(avatar.directory).resolve()), kind)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            return hit
    renderer = open_avatar_renderer(avatar, engine=engine, backend=backend)
    shared = SharedAvatar(avatar, renderer)
    with _CACHE_LOCK:
        return _CACHE.setdefault(key, shared)


def clear_avatar_cache() -> None:
    """Forget every shared avatar (sessions that hold one keep it)."""
    with _CACHE_LOCK:
        _CACHE.clear()


# ------------------------------------------------------------------ audio in


def _mono_float(pcm: bytes | npt.ArrayLike, channels: int) -> npt.NDArray[np.float32]:
    """Interleaved s16le bytes (or an int16/float array) → mono float32 in [-1, 1]."""
    if channels < 1:
        raise InputError(f"audio must have at least one channel, got {channels}")
    if isinstance(pcm, (bytes, bytearray, memoryview)):
        if len(pcm) % (2 * channels):
            raise InputError(
                f"audio of {len(pcm)} bytes is not whole {channels}-channel s16le samples"
            )
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    else:
        a = np.asarray(pcm)
        if a.dtype == np.int16:
            x = a.astype(np.float32).reshape(-1) / 32768.0
        elif np.issubdtype(a.dtype, np.floating):
            x = a.astype(np.float32).reshape(-1)
        else:
            raise InputError(f"audio must be s16le bytes, int16 or float samples; got {a.dtype}")
        if x.size % channels:
            raise InputError(f"{x.size} samples are not whole {channels}-channel frames")
    if channels > 1:
        x = x.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return x


def _to_int16(x: npt.NDArray[np.float32]) -> I16:
    return np.asarray(np.clip(np.rint(x * 32768.0), -32768, 32767), dtype=np.int16)


class _Resampler:
    """Streaming resampling to the output rate (soxr keeps its filter state between chunks,
    so chunk boundaries neither click nor drift)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0:
            raise InputError(f"sample rate must be positive, got {in_rate}")
        self.in_rate = in_rate
        self._stream: Any = None
        if in_rate != out_rate:
            import soxr

            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")

    def push(self, x: npt.NDArray[np.float32], *, last: bool = False) -> npt.NDArray[np.float32]:
        if self._stream is None:
            return x
        return np.asarray(self._stream.resample_chunk(x, last=last), dtype=np.float32)


# ------------------------------------------------------------------ one utterance


class _AudioDrivenMouth:
    """The audio-driven back end's streaming API, in one place: a patch stream over the
    utterance's padded audio (patch ``k`` shows output audio frame ``k``) and ``composite``."""

    def __init__(self, shared: SharedAvatar, sample_rate: int, idle_start: int) -> None:
        mouth: Any = shared.renderer.mouth
        self.mouth = mouth
        self.stream: Any = mouth.stream(sample_rate=sample_rate, idle_start=idle_start)
        self.patches: dict[int, Any] = {}
        self.finished = False

    def push(self, pcm: I16) -> None:
        for p in self.stream.push(pcm.tobytes()):
            self.patches[int(p.frame)] = p

    def finish(self) -> None:
        if not self.finished:
            for p in self.stream.finish():
                self.patches[int(p.frame)] = p
            self.finished = True

    def render(self, idle: U8, idle_index: int, k: int) -> U8 | None:
        patch = self.patches.pop(k, None)
        if patch is None:
            return None
        return np.asarray(self.mouth.composite(idle, patch, idle_index=idle_index))


class _Segment:
    """One utterance: its audio (lead-in silence first), its viseme streams, its frames."""

    def __init__(self, live: LiveRenderer, idle_start: int) -> None:
        self.live = live
        self.sr = live.sample_rate
        self.fps = live.fps
        lead = round(live.lead_ms * self.sr / 1000.0)
        self.lead_samples = lead
        self._chunks: deque[I16] = deque([np.zeros(lead, dtype=np.int16)])
        self.samples = lead  # padded samples received
        self._read = 0  # samples handed out
        self._resampler: _Resampler | None = None
        self.ended = False
        self.next_k = 0
        self.has_timings = False
        self.text_frames: dict[int, Mapping[str, float]] = {}
        self.audio_frames: dict[int, Mapping[str, float]] = {}
        self.text_done = False
        self.audio_done = False
        self.text: VisemeStream | None = None
        self.estimate: AudioVisemeStream | None = None
        self.patches: _AudioDrivenMouth | None = None
        if live.shared.audio_driven:
            self.patches = _AudioDrivenMouth(live.shared, self.sr, idle_start)
            self.patches.push(self._chunks[0])
        else:
            self.text = live.engine.mapper(live.mapper).stream(language=live.language, fps=self.fps)
            self.estimate = live.estimator.stream(
                sample_rate=self.sr, fps=self.fps, language=live.language
            )

    # -- input

    @property
    def speech_ms(self) -> float:
        return (self.samples - self.lead_samples) * 1000.0 / self.sr

    def push(
        self,
        x: npt.NDArray[np.float32],
        rate: int,
        phonemes: Sequence[PhonemeTiming],
        chars: Sequence[CharTiming],
    ) -> None:
        if len(x):  # timings alone (push_timings) leave the resampler as it is
            if self._resampler is None or self._resampler.in_rate != rate:
                if self._resampler is not None:  # the rate changed: flush the old filter
                    self._add(self._resampler.push(np.zeros(0, np.float32), last=True))
                self._resampler = _Resampler(rate, self.sr)
            self._add(self._resampler.push(x))
        self._timings(phonemes, chars)

    def _add(self, y: npt.NDArray[np.float32]) -> None:
        if not len(y):
            return
        pcm = _to_int16(y)
        self._chunks.append(pcm)
        self.samples += len(pcm)
        if self.patches is not None:
            self.patches.push(pcm)
        elif self.estimate is not None:
            for f in self.estimate.push(pcm.tobytes()):
                self.audio_frames[round(f.pts_ms * self.fps / 1000.0)] = f.weights

    def _timings(self, phonemes: Sequence[PhonemeTiming], chars: Sequence[CharTiming]) -> None:
        if self.text is None:
            return
        if phonemes or chars:
            self.has_timings = True
        if self.has_timings:
            for f in self.text.push(phonemes=phonemes, chars=chars, horizon_ms=self.speech_ms):
                self.text_frames[round(f.pts_ms * self.fps / 1000.0)] = f.weights

    def end(self) -> None:
        if self.ended:
            return
        if self._resampler is not None:
            self._add(self._resampler.push(np.zeros(0, np.float32), last=True))
        self.ended = True
        if self.patches is not None:
            self.patches.finish()
            return
        assert self.text is not None and self.estimate is not None
        if self.has_timings:
            for f in self.text.finish(self.speech_ms):
                self.text_frames[round(f.pts_ms * self.fps / 1000.0)] = f.weights
        for f in self.estimate.finish():
            self.audio_frames[round(f.pts_ms * self.fps / 1000.0)] = f.weights
        self.text_done = self.audio_done = True

    # -- output

    def boundary(self, k: int) -> int:
        return round(k * self.sr / self.fps)

    @property
    def audio_frames_total(self) -> int:
        """Frames that carry audio (known once the segment ended)."""
        k = max(1, math.ceil(self.samples * self.fps / self.sr - 1e-9))
        while self.boundary(k) < self.samples:  # rates that do not divide evenly
            k += 1
        return k

    def _frames(self) -> dict[int, Mapping[str, float]]:
        return self.text_frames if self.has_timings else self.audio_frames

    def _last_viseme(self) -> int:
        frames = self._frames()
        return max(frames) if frames else -1

    def ready(self) -> bool:
        k = self.next_k
        if self.ended:
            return True
        if self.samples < self.boundary(k + 1):
            return False
        if self.patches is not None:
            return k in self.patches.patches
        return k in self._frames()

    def done(self) -> bool:
        if not self.ended:
            return False
        if self.next_k < self.audio_frames_total:
            return False
        return self.patches is not None or self.next_k > self._last_viseme()

    def take_audio(self, k: int) -> tuple[I16 | None, bool]:
        """The audio of frame ``k`` (zero-padded at the end) and whether it is the last."""
        total = self.audio_frames_total if self.ended else None
        if total is not None and k >= total:
            return None, False
        n = self.boundary(k + 1) - self.boundary(k)
        out = np.zeros(n, dtype=np.int16)
        got = 0
        while got < n and self._chunks:
            c = self._chunks[0]
            take = min(n - got, len(c))
            out[got : got + take] = c[:take]
            got += take
            if take == len(c):
                self._chunks.popleft()
            else:
                self._chunks[0] = c[take:]
        self._read += got
        return out, total is not None and k == total - 1

    def weights(self, k: int) -> Mapping[str, float]:
        return self._frames().pop(k, {})


# ------------------------------------------------------------------ the renderer


def default_estimator(engine: Engine) -> AudioVisemeEstimator:
    """Visemes for speech that comes without timings: the engine's audio-only estimator (its
    settings' default, the shipped model: lips closed for most /p b m/, at 93.5 ms of
    look-ahead), else, where no estimator is installed, :class:`EnergyVisemeEstimator`."""
    try:
        return engine.audio_viseme_estimator()
    except PluginNotFoundError:
        return EnergyVisemeEstimator()


_SHUT = 0.85  # a /p b m/ weight from which the drawn lips touch (see _hold_closure)


class LiveRenderer:
    """Live frames for one session: see the module docstring for the contract.

    ``avatar``: a loaded avatar or its directory; ``backend`` overrides the manifest's lip-sync
    back end (its assets must be there). ``sample_rate``: the output audio's rate (input at any
    rate and channel count is resampled to it, mono). ``video_format``: ``"rgba"``, ``"i420"``
    or ``"rgb"``. ``language``: for G2P of characters and words. ``estimator``: visemes for
    utterances without timings (default: the engine's audio-only estimator, see
    :func:`default_estimator`). ``lead_ms``: how far
    the mouth leads the audio (default: the engine's). ``ramp_ms``: the barge-in ramp.
    ``buffers``: frames a caller may hold at once before their buffers are reused.
    ``min_closure_frames``: hold each /p b m/ closure shut for at least that many frames (for
    transports that re-sample the frames and may skip one; 1: as computed).

    Not thread-safe: one session is driven from one thread (or one event loop) at a time.
    """

    def __init__(
        self,
        avatar: Avatar | str | Path | SharedAvatar,
        *,
        engine: Engine | None = None,
        backend: str | None = None,
        sample_rate: int = 24000,
        video_format: VideoFormat = "rgba",
        language: str = "en",
        estimator: AudioVisemeEstimator | None = None,
        mapper: str | None = None,
        lead_ms: float | None = None,
        ramp_ms: float = 150.0,
        buffers: int = 4,
        min_closure_frames: int = 1,
    ) -> None:
        if engine is None:
            from lipcore.engine import Engine

            engine = Engine()
        if video_format not in ("rgba", "i420", "rgb"):
            raise InputError(f"video_format must be 'rgba', 'i420' or 'rgb', got {video_format!r}")
        if not isinstance(sample_rate, int) or not 8000 <= sample_rate <= 192000:
            raise InputError(f"sample_rate must be 8000–192000 Hz, got {sample_rate!r}")
        if not 100.0 <= ramp_ms <= 200.0:
            raise InputError(f"the barge-in ramp lasts 100–200 ms; got {ramp_ms} ms")
        self.engine = engine
        self.shared = (
            avatar
            if isinstance(avatar, SharedAvatar)
            else shared_avatar(avatar, engine=engine, backend=backend)
        )
        self.fps = self.shared.fps
        self.width, self.height = self.shared.width, self.shared.height
        self.sample_rate = sample_rate
        self.video_format: VideoFormat = video_format
        self.language = language
        self.mapper = mapper
        self.estimator: AudioVisemeEstimator = estimator or default_estimator(engine)
        self.lead_ms = float(engine.settings.lead_ms if lead_ms is None else lead_ms)
        if not 0.0 <= self.lead_ms <= 200.0:
            raise InputError(f"lead_ms must be 0–200 ms, got {self.lead_ms}")
        self.ramp_ms = ramp_ms
        self._segments: deque[_Segment] = deque()
        self._k = 0  # video frames pulled so far (the idle loop's clock)
        self._last: Mapping[str, float] | None = None  # weights of the last frame shown
        self._ramp: deque[Mapping[str, float]] = deque()
        n = max(2, buffers + 1)
        # RGB frames leave as they are only in the "rgb" format; otherwise the conversion
        # copies them out at once and one scratch buffer serves every frame.
        n_rgb = n if video_format == "rgb" else 1
        self._rgb = [np.empty_like(self.shared.idle[0]) for _ in range(n_rgb)]
        self._out: list[U8] = []
        self._n_buffers = n
        self._next_buffer = 0
        self.cleared_samples = 0  # audio dropped by clear() (for logs and tests)
        if not 1 <= min_closure_frames <= 3:
            raise InputError(f"min_closure_frames must be 1–3, got {min_closure_frames}")
        self.min_closure_frames = min_closure_frames
        self._closure_run = 0  # frames the lips have been shut for, in a row
        self._closure_weights: Mapping[str, float] = {}

    # -- input -----------------------------------------------------------------------------

    @property
    def speaking(self) -> bool:
        """An utterance is queued or playing."""
        return bool(self._segments)

    def samples_for(self, index: int) -> int:
        """Audio samples paired with video frame ``index`` (frame-aligned rates: always
        ``sample_rate / fps``)."""
        sr, fps = self.sample_rate, self.fps
        return round((index + 1) * sr / fps) - round(index * sr / fps)

    def push_audio(
        self,
        pcm: bytes | npt.ArrayLike,
        *,
        sample_rate: int,
        channels: int = 1,
        phonemes: Sequence[PhonemeTiming] = (),
        chars: Sequence[CharTiming] = (),
        words: Sequence[WordTiming] = (),
    ) -> None:
        """Add the next audio of the current utterance (a new one starts after
        :meth:`end_segment` or :meth:`clear`), with the timings that came with it.

        ``pcm``: interleaved s16le bytes, or int16/float samples; any rate and channel count
        (mixed to mono, resampled to :attr:`sample_rate`). Timings are ms from the first
        sample of the utterance; words are spread into characters for the mapper's G2P."""
        x = _mono_float(pcm, channels)
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise InputError(f"sample_rate must be a positive integer, got {sample_rate!r}")
        spans: list[PhonemeTiming | CharTiming | WordTiming] = [*phonemes, *chars, *words]
        for t in spans:
            if not (math.isfinite(t.start_ms) and math.isfinite(t.end_ms)) or t.end_ms < t.start_ms:
                raise InputError(f"a timing must have finite start ≤ end, got {t!r}")
        seg = self._open_segment()
        seg.push(x, sample_rate, phonemes, [*chars, *words_to_chars(words)])

    def push_timings(
        self,
        *,
        phonemes: Sequence[PhonemeTiming] = (),
        chars: Sequence[CharTiming] = (),
        words: Sequence[WordTiming] = (),
    ) -> None:
        """Timings that arrive apart from audio (for the current utterance)."""
        self.push_audio(
            b"", sample_rate=self.sample_rate, phonemes=phonemes, chars=chars, words=words
        )

    def end_segment(self) -> None:
        """The current utterance's audio is complete: it plays out, then the idle loop."""
        if self._segments and not self._segments[-1].ended:
            self._segments[-1].end()

    def clear(self) -> None:
        """Barge-in: drop every queued sample now and ramp the mouth to Rest."""
        for seg in self._segments:
            self.cleared_samples += max(0, seg.samples - seg._read)
        self._segments.clear()
        self._start_ramp()

    def _open_segment(self) -> _Segment:
        if not self._segments or self._segments[-1].ended:
            self._segments.append(_Segment(self, self._k))
        return self._segments[-1]

    def _start_ramp(self) -> None:
        self._ramp.clear()
        last = self._last
        if not last:
            return
        step = 1000.0 / self.fps
        track = [VisemeFrame(0.0, last), VisemeFrame(step, last)]
        for f in ramp_to_rest(track, 0.0, self.ramp_ms)[1:]:
            self._ramp.append(f.weights)

    # -- output ----------------------------------------------------------------------------

    def ready(self) -> bool:
        """The next :meth:`pull` returns the utterance's next frame (its audio, or the mouth's
        tail after the audio), not an idle or hold frame."""
        return bool(self._segments) and self._segments[0].ready()

    def pull(self) -> LiveFrame:
        """The next video frame (with its audio while speaking); never blocks."""
        k = self._k
        i = k % len(self.shared.idle)
        seg = self._segments[0] if self._segments else None
        audio: I16 | None = None
        end = False
        weights: Mapping[str, float] | None
        rgb: U8 | None = None
        if seg is not None and seg.ready():
            sk = seg.next_k
            audio, end = seg.take_audio(sk)
            if seg.patches is not None:
                rgb = seg.patches.render(self.shared.idle[i], i, sk)
                weights = None
            else:
                weights = self._hold_closure(seg.weights(sk))
            seg.next_k += 1
            if seg.done():
                self._segments.popleft()
            self._ramp.clear()
        elif seg is not None and seg.next_k > 0:
            weights = self._last  # waiting for input mid-utterance: hold the mouth
        elif self._ramp:
            weights = self._ramp.popleft()
        else:
            weights = None
        if weights is not None and not self.shared.audio_driven:
            rgb = self.shared.renderer.frame_into(k, weights, self._next_rgb())
        self._last = weights if weights else None
        self._k += 1
        return LiveFrame(
            index=k, video=self._convert(i, rgb), audio=audio, segment_end=end, weights=weights
        )

    def _hold_closure(self, weights: Mapping[str, float]) -> Mapping[str, float]:
        """With ``min_closure_frames`` > 1: a /p b m/ closure shown shut for fewer frames than
        that is held shut for the rest (the frames after it open that much later). A transport
        that re-samples the frames on its own clock shows some frames for less than a frame
        period and may skip one; a closure of one frame would then flash by or vanish. Real
        lip closures last 50–100 ms anyway. "Shut" is a /p b m/ weight of at least 0.85: a
        frame blended half-way out of a closure (0.5–0.7) already shows the lips apart."""
        if self.min_closure_frames <= 1:
            return weights
        if weights.get("MBP", 0.0) >= _SHUT:
            self._closure_run += 1
            self._closure_weights = weights
            return weights
        if 0 < self._closure_run < self.min_closure_frames:
            self._closure_run += 1
            return self._closure_weights
        self._closure_run = 0
        return weights

    def _next_rgb(self) -> U8:
        return self._rgb[self._next_buffer % len(self._rgb)]

    def _convert(self, i: int, rgb: U8 | None) -> U8:
        from lipcore.render import _changed_box

        slot = self._next_buffer % self._n_buffers
        self._next_buffer += 1
        if self.video_format == "rgb":
            return self.shared.idle[i] if rgb is None else rgb
        idle = self.shared.idle[i]
        rgba = self.video_format == "rgba"
        base = self.shared.idle_rgba(i) if rgba else self.shared.idle_i420(i)
        if rgb is None or rgb is idle:
            return base
        box = _changed_box(np.ascontiguousarray(rgb), idle)
        if box is None:
            return base
        if len(self._out) < self._n_buffers:
            self._out.append(np.empty_like(base))
        out = self._out[slot % len(self._out)]
        np.copyto(out, base)
        x0, y0, x1, y1 = box
        if self.video_format == "rgba":
            out[y0:y1, x0:x1, :3] = rgb[y0:y1, x0:x1]
        else:
            from lipcore.media import update_i420_region

            update_i420_region(out, rgb, x0, y0, x1, y1)
        return out


def words_to_chars(words: Sequence[WordTiming]) -> list[CharTiming]:
    """Words with spans → characters with spans (each word's letters share its span evenly,
    a space after it), the form the viseme mapper's G2P path takes."""
    out: list[CharTiming] = []
    for w in words:
        text = w.word.strip()
        if not text:
            continue
        step = (w.end_ms - w.start_ms) / len(text)
        for j, ch in enumerate(text):
            out.append(CharTiming(ch, w.start_ms + j * step, w.start_ms + (j + 1) * step))
        out.append(CharTiming(" ", w.end_ms, w.end_ms))
    return out


def words_from_phonemes(
    text: str, phonemes: list[PhonemeTiming], language: str = "en-us"
) -> list[WordTiming]:
    """Word spans of ``text`` from its phoneme timings (as lipcore's espeak source gives them):
    what a TTS that times words would send. espeak numbers its words but joins clitics ("on
    the" is one word to it), so each of its words is split among the text's words by their
    phoneme counts from the same G2P."""
    from lipcore.default_plugins.mapper import g2p_word

    words = [w.strip(".,;:!?\"'()") for w in text.split()]
    words = [w for w in words if w]
    groups: dict[int, list[PhonemeTiming]] = {}
    for p in phonemes:
        groups.setdefault(p.word, []).append(p)
    out: list[WordTiming] = []
    wi = 0
    for _, group in sorted(groups.items()):
        take: list[tuple[str, int]] = []
        total = 0
        while wi < len(words):
            n = max(1, len(g2p_word(words[wi], language)))
            take.append((words[wi], n))
            total += n
            wi += 1
            if total >= len(group) - 1:
                break
        at = 0
        for j, (word, n) in enumerate(take):
            last = j == len(take) - 1
            hi = len(group) if last else min(len(group) - 1, at + n)
            span = group[min(at, len(group) - 1) : max(hi, at + 1)]
            out.append(WordTiming(word, span[0].start_ms, span[-1].end_ms))
            at = hi
    return out
