"""Built-in audio viseme estimators.

* ``model`` (alias ``default``): lipcore's small shipped model (see
  :mod:`lipcore.speech.audio_visemes`): audio-only in streaming and whole-file form; with the text,
  the whole-file form aligns espeak's phonemes for it to the audio and maps them through the
  engine's mapper like a TTS source's timings.
* ``energy``: the plain baseline, loudness → jaw (AI for loud, Rest for quiet). It cannot
  close the lips for /p b m/; it is here to measure the model against, and as the cheapest
  fallback.

Frame times are on the audio timeline (0 = the first sample); the caller applies the
mouth's lead, as the engine does for TTS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from lipcore.errors import InputError
from lipcore.hookspecs import Register, hookimpl
from lipcore.interfaces import (
    AudioVisemeEstimator,
    AudioVisemeStream,
    PhonemeTiming,
    VisemeFrame,
    VisemeMapper,
)
from lipcore.speech import audio_visemes as av
from lipcore.speech.visemes import VISEME_CLASSES

__all__ = [
    "AudioVisemeResult",
    "EnergyAudioVisemeEstimator",
    "ModelAudioVisemeEstimator",
    "PosteriorStream",
    "register_audio_viseme_estimators",
]

PosteriorFn = Callable[[np.ndarray], np.ndarray]
_N = len(VISEME_CLASSES)
_AI = VISEME_CLASSES.index("AI")
_MBP = VISEME_CLASSES.index("MBP")
#: A prior in favour of closed lips: a missed /p b m/ is the most visible error. Measured
#: (bench_audio_visemes.py, held-out espeak voices): 2× finds 93–95 % of closures instead of
#: 89–93 %, at 0.1–0.2 points of frame agreement.
MBP_BIAS = 2.0


def _check(sample_rate: int, fps: float) -> None:
    if not isinstance(sample_rate, int) or not 4000 <= sample_rate <= 192000:
        raise InputError(f"sample rate {sample_rate!r} Hz is not supported (4000–192000)")
    if not 1.0 <= fps <= 240.0:
        raise InputError(f"fps {fps!r} is out of range (1–240)")


class PosteriorStream(AudioVisemeStream):
    """Streaming frames from per-10 ms class posteriors over stacked context features.

    Memory stays bounded whatever the length: only the context window of features and the
    last smoothed posteriors are kept. The frames equal the whole-file form's
    (posteriors, then :func:`lipcore.speech.audio_visemes.frames_from_posteriors`)."""

    def __init__(
        self,
        posterior_fn: PosteriorFn,
        context: tuple[int, ...],
        *,
        sample_rate: int,
        fps: float,
    ) -> None:
        _check(sample_rate, fps)
        self._fn = posterior_fn
        self._ctx = np.array(context)
        self._past = -min(context)
        self._future = max(context)
        self.fe = av.FrontEnd(sample_rate)
        self.sample_rate = sample_rate
        self.fps = fps
        self._feats = np.zeros((0, av.N_FEATURES), dtype=np.float32)
        self._f0 = 0  # absolute index of _feats[0]
        self._raw = np.zeros((0, _N), dtype=np.float32)
        self._r0 = 0  # absolute index of _raw[0]
        self._n_raw = 0
        self._smooth = np.zeros((0, _N), dtype=np.float32)
        self._s0 = 0
        self._n_smooth = 0
        self._next = 0  # next output frame
        self._samples = 0
        self._finished = False

    def push(self, pcm: bytes) -> list[VisemeFrame]:
        if self._finished:
            raise InputError("this audio viseme stream is finished")
        if len(pcm) % 2:
            raise InputError("PCM must be s16le: an even number of bytes")
        x = av.as_float(pcm)
        self._samples += len(x)
        self._add_feats(self.fe.push(x))
        self._compute(final=False)
        return self._frames(final=False)

    def finish(self) -> list[VisemeFrame]:
        if self._finished:
            return []
        self._finished = True
        self._add_feats(self.fe.flush())
        self._compute(final=True)
        out = self._frames(final=True)
        if not out or out[-1].weights:
            out.append(VisemeFrame(pts_ms=self._next * 1000.0 / self.fps, weights={}))
            self._next += 1
        return out

    @property
    def audio_ms(self) -> float:
        return self._samples * 1000.0 / self.sample_rate

    def _add_feats(self, rows: np.ndarray) -> None:
        if len(rows):
            self._feats = np.concatenate([self._feats, rows])

    def _compute(self, *, final: bool) -> None:
        n_feats = self._f0 + len(self._feats)
        upto = n_feats if final else n_feats - self._future
        if upto > self._n_raw and n_feats:
            idx = np.arange(self._n_raw, upto)[:, None] + self._ctx[None, :]
            idx = np.clip(idx, 0, n_feats - 1) - self._f0
            stacked = self._feats[idx].reshape(len(idx), -1)
            self._raw = np.concatenate([self._raw, self._fn(stacked).astype(np.float32)])
            self._n_raw = upto
            keep = max(0, self._n_raw - self._past) - self._f0
            if keep > 0:
                self._feats = self._feats[keep:]
                self._f0 += keep
        # smoothed i needs raw i-1, i, i+1 (edges repeat)
        s_upto = self._n_raw if final else self._n_raw - 1
        if s_upto > self._n_smooth:
            i = np.arange(self._n_smooth, s_upto)
            last = self._n_raw - 1
            a = self._raw[np.maximum(i - 1, 0) - self._r0]
            b = self._raw[i - self._r0]
            c = self._raw[np.minimum(i + 1, last) - self._r0]
            self._smooth = np.concatenate([self._smooth, (a + b + c) / 3.0])
            self._n_smooth = s_upto
            keep = max(0, self._n_smooth - 2) - self._r0
            if keep > 0:
                self._raw = self._raw[keep:]
                self._r0 += keep

    def _frames(self, *, final: bool) -> list[VisemeFrame]:
        out: list[VisemeFrame] = []
        audio_ms = self.audio_ms
        while True:
            t = self._next * 1000.0 / self.fps
            x = t / av.HOP_MS
            i = int(x)
            if final:
                if t > audio_ms or self._n_smooth == 0:
                    break
                i = min(i, self._n_smooth - 1)
            elif i + 1 >= self._n_smooth:
                break
            f = x - i
            p = self._smooth[i - self._s0]
            if i + 1 < self._n_smooth:
                p = p * (1.0 - f) + self._smooth[i + 1 - self._s0] * f
            lo = min(av.closure_window(t, self.fps), i)
            window = self._smooth[lo - self._s0 : i + 1 - self._s0]
            out.append(VisemeFrame(pts_ms=t, weights=av.frame_weights(p, window)))
            self._next += 1
        t_next = self._next * 1000.0 / self.fps
        needed = min(int(t_next / av.HOP_MS), av.closure_window(t_next, self.fps))
        keep = max(0, min(needed, self._n_smooth) - 1) - self._s0
        if keep > 0:
            self._smooth = self._smooth[keep:]
            self._s0 += keep
        return out


@dataclass
class AudioVisemeResult:
    """The whole-file form's frames plus what it found on the way."""

    frames: list[VisemeFrame]
    audio_ms: float
    phonemes: list[PhonemeTiming] = field(default_factory=list)  # text known: aligned times
    text_gap: float | None = None  # text known: alignment gap per frame (lower = better fit)
    aligner: str | None = None  # text known: "pocketsphinx" (English) or "model"
    posteriors: np.ndarray | None = None  # smoothed, one row per 10 ms


def _float_samples(pcm: bytes | np.ndarray) -> np.ndarray:
    """Samples in [-1, 1]: s16le bytes or int16 samples are scaled, float samples are taken as
    such (an int16 array read as floats put the level features 90 dB off: no silence gate)."""
    if isinstance(pcm, (bytes, bytearray)) or np.issubdtype(pcm.dtype, np.integer):
        return av.as_float(pcm)
    return pcm.astype(np.float32)


class _PosteriorEstimator(AudioVisemeEstimator):
    context: ClassVar[tuple[int, ...]] = (0,)

    def _posterior_fn(self) -> PosteriorFn:
        raise NotImplementedError

    def stream(
        self,
        *,
        sample_rate: int,
        fps: float,
        language: str | None = None,
        text: str | None = None,
    ) -> AudioVisemeStream:
        """Audio only (the text is used by the whole-file form, which sees all the audio)."""
        return PosteriorStream(self._posterior_fn(), self.context, sample_rate=sample_rate, fps=fps)

    def posteriors(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        """Raw class posteriors, one row per 10 ms (the first centred on sample 0)."""
        feats = av.features(samples, sample_rate)
        if not len(feats):
            return np.zeros((0, _N), dtype=np.float32)
        n = len(feats)
        idx = np.clip(np.arange(n)[:, None] + np.array(self.context)[None, :], 0, n - 1)
        return self._posterior_fn()(feats[idx].reshape(n, -1)).astype(np.float32)

    def analyse(
        self,
        pcm: bytes | np.ndarray,
        *,
        sample_rate: int,
        fps: float,
        language: str | None = None,
        text: str | None = None,
    ) -> AudioVisemeResult:
        _check(sample_rate, fps)
        x = _float_samples(pcm)
        audio_ms = len(x) * 1000.0 / sample_rate
        raw = self.posteriors(x, sample_rate)
        post = av.smooth(raw)
        count = int(audio_ms * fps / 1000.0) + 1 if len(post) else 0
        frames = av.frames_from_posteriors(post, fps=fps, first=0, count=count)
        if not frames or frames[-1].weights:  # end at Rest, as the stream does
            frames.append(VisemeFrame(pts_ms=count * 1000.0 / fps, weights={}))
        return AudioVisemeResult(frames=frames, audio_ms=audio_ms, posteriors=post)

    def estimate(
        self,
        pcm: bytes,
        *,
        sample_rate: int,
        fps: float,
        language: str | None = None,
        text: str | None = None,
    ) -> list[VisemeFrame]:
        return self.analyse(
            pcm, sample_rate=sample_rate, fps=fps, language=language, text=text
        ).frames


class ModelAudioVisemeEstimator(_PosteriorEstimator):
    """The shipped model; with ``text``, the whole-file form aligns the text's phonemes (for
    English with pocketsphinx's acoustic model where it applies, see
    :mod:`lipcore.speech.phone_align`)."""

    name: ClassVar[str] = "model"
    lookahead_ms: ClassVar[float] = av.LOOKAHEAD_MS
    context: ClassVar[tuple[int, ...]] = av.CONTEXT

    def __init__(
        self, *, mapper: VisemeMapper | None = None, english_aligner: bool = True, **_: Any
    ) -> None:
        self._mapper = mapper
        self.net = av.load_model()
        #: English text: phoneme times from pocketsphinx where it applies (False: always
        #: lipcore's own aligner).
        self.english_aligner = english_aligner

    @property
    def mapper(self) -> VisemeMapper:
        if self._mapper is None:
            from lipcore.default_plugins.mapper import DefaultVisemeMapper

            self._mapper = DefaultVisemeMapper()
        return self._mapper

    def _posterior_fn(self) -> PosteriorFn:
        net = self.net
        col = av.CONTEXT.index(0) * av.N_FEATURES + av.N_MELS + 1  # the frame's own level

        bias = np.ones(_N, dtype=np.float32)
        bias[_MBP] = MBP_BIAS

        def fn(stacked: np.ndarray) -> np.ndarray:
            post = net.posteriors(stacked) * bias
            post /= post.sum(axis=1, keepdims=True)
            # Below the silence gate the frame is Rest whatever the model says: a quiet
            # recording's room noise sits high above the level tracker's floor before the
            # first word, and the model then hears consonants in it.
            quiet = stacked[:, col] * 10.0 < av.SILENCE_GATE
            post[quiet] = 0.0
            post[quiet, 0] = 1.0
            return post

        return fn

    def analyse(
        self,
        pcm: bytes | np.ndarray,
        *,
        sample_rate: int,
        fps: float,
        language: str | None = None,
        text: str | None = None,
    ) -> AudioVisemeResult:
        result = super().analyse(pcm, sample_rate=sample_rate, fps=fps)
        if text is None or not text.strip():
            return result
        lang = language or "en-us"
        assert result.posteriors is not None
        raw_log = np.log(np.maximum(result.posteriors, 1e-8)).astype(np.float32)
        # lipcore's own alignment decides whether the text fits the audio at all (and gives
        # the times where pocketsphinx does not apply); for English, pocketsphinx's acoustic
        # model, trained on human speech, places the phonemes (speech/phone_align.py).
        phonemes, gap = av.align_text(raw_log, text, lang, log_prior=self.net.log_prior)
        aligner = "model"
        if self.english_aligner and lang.lower().startswith("en"):
            from lipcore.speech.phone_align import align_english

            found = align_english(_float_samples(pcm), sample_rate, text)
            if found is not None:
                phonemes, aligner = _trim_pauses(found, result.posteriors), "pocketsphinx"
        track = self.mapper.track_from_phonemes(phonemes, language=lang)
        frames = self.mapper.sample(track, fps=fps, end_ms=result.audio_ms)
        return AudioVisemeResult(
            frames=frames,
            audio_ms=result.audio_ms,
            phonemes=phonemes,
            text_gap=gap,
            aligner=aligner,
            posteriors=result.posteriors,
        )


#: A pause the model hears (Rest the likeliest class) for at least this long is cut out of the
#: phoneme it falls in.
PAUSE_MS = 60.0
_LIPS_SHUT = frozenset({"p", "b", "m"})


def _trim_pauses(phonemes: list[PhonemeTiming], post: np.ndarray) -> list[PhonemeTiming]:
    """pocketsphinx's phonemes with the pauses the model hears cut off their ends.

    Its alignment lets a word's last phoneme run on into the pause after it (at a comma,
    at the end), where the mouth should rest; lipcore's model hears the pause. A phoneme's
    leading or trailing stretch of at least :data:`PAUSE_MS` where the model's likeliest class
    is Rest is cut away. /p b m/ keep their span: their closure is silent too."""
    silent = post.argmax(axis=1) == av.REST
    need = int(PAUSE_MS / av.HOP_MS)
    out: list[PhonemeTiming] = []
    for p in phonemes:
        a = max(0, round(p.start_ms / av.HOP_MS))
        b = min(len(silent), round(p.end_ms / av.HOP_MS))
        if p.phoneme in _LIPS_SHUT or b - a <= need:
            out.append(p)
            continue
        lo, hi = a, b
        while hi > lo and silent[hi - 1]:
            hi -= 1
        if b - hi < need:
            hi = b
        while lo < hi and silent[lo]:
            lo += 1
        if lo - a < need:
            lo = a
        if hi - lo < 2:  # all silent to the model: keep it, the text says it is there
            out.append(p)
            continue
        start = p.start_ms if lo == a else lo * av.HOP_MS
        end = p.end_ms if hi == b else hi * av.HOP_MS
        out.append(PhonemeTiming(p.phoneme, start, end, p.word))
    return out


def _energy_posteriors(feats: np.ndarray) -> np.ndarray:
    # Peak-relative energy (natural log units) → jaw: fully open 0.5 below the peak,
    # closed 4.5 (≈ 20 dB) below it; digital silence (abs level) is always closed.
    rel = feats[:, av.N_MELS]
    absolute = feats[:, av.N_MELS + 1] * 10.0
    open_ = np.clip((rel + 4.5) / 4.0, 0.0, 1.0) * (absolute > np.log(1e-7))
    out = np.zeros((len(feats), _N), dtype=np.float32)
    out[:, _AI] = open_
    out[:, 0] = 1.0 - open_
    return out


class EnergyAudioVisemeEstimator(_PosteriorEstimator):
    """Baseline: loudness → jaw opening (AI), nothing else."""

    name: ClassVar[str] = "energy"
    lookahead_ms: ClassVar[float] = av.HOP_MS + av.WIN_MS / 2.0 + 5.0
    context: ClassVar[tuple[int, ...]] = (0,)

    def __init__(self, **_: Any) -> None:
        pass

    def _posterior_fn(self) -> PosteriorFn:
        return _energy_posteriors


@hookimpl
def register_audio_viseme_estimators(register: Register) -> None:
    register("model", ModelAudioVisemeEstimator, aliases=("default",))
    register("energy", EnergyAudioVisemeEstimator)
