"""Visemes from audio alone: the acoustic front end, the small shipped model, and the
text-known forced alignment.

The model is a two-layer perceptron over stacked log-mel frames, trained by
``scripts/train_audio_visemes.py`` on espeak-ng speech of many voices, languages, rates and
pitches (espeak reports exact phoneme times, so the labels come for free). Its weights ship in
``lipcore/data/audio_visemes.npz`` (~130 kB); inference is numpy only.

* **Front end** (:class:`FrontEnd`): 25 ms Hann windows every 10 ms at the input's own sample
  rate, 32 mel bands from 60 Hz to 8 kHz. Bands above the input's Nyquist frequency (8 kHz
  telephone audio) get the floor value, as in the band-limited part of the training data. The
  level is normalised by a peak tracker (a loud recording and a quiet one look alike), and an
  absolute-level feature lets digital silence be Rest whatever the tracker says.
* **Context**: each frame sees frames from 120 ms before to 60 ms after it, so a streaming
  estimate is final 60 ms + half a window + one smoothing frame after its time
  (:data:`LOOKAHEAD_MS`).
* **Text known** (:func:`align_text`): espeak's phonemes for the text, as a left-to-right chain
  of viseme-class states (optional Rest between words), Viterbi-aligned on the model's
  per-frame class posteriors; the aligned phoneme times then go through the engine's mapper
  like a TTS source's timings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Final

import numpy as np
import numpy.typing as npt

from lipcore.errors import InputError
from lipcore.interfaces import PhonemeTiming, VisemeFrame
from lipcore.speech.visemes import VISEME_CLASSES, is_silence, is_vowel, phoneme_visemes

__all__ = [
    "CONTEXT",
    "HOP_MS",
    "LOOKAHEAD_MS",
    "FrontEnd",
    "TextMismatchError",
    "VisemeNet",
    "align_text",
    "frames_from_posteriors",
    "load_model",
    "text_states",
]

FloatArray = npt.NDArray[np.float32]

HOP_MS: Final = 10.0
WIN_MS: Final = 25.0
N_MELS: Final = 32
F_MIN: Final = 60.0
F_MAX: Final = 8000.0
#: Context frames stacked for one estimate (offsets in hops; the largest is the look-ahead).
CONTEXT: Final[tuple[int, ...]] = (-12, -8, -5, -3, -2, -1, 0, 1, 2, 3, 4, 6)
#: Posterior smoothing: a centred 3-frame mean (one more hop of look-ahead).
_SMOOTH: Final = 1
#: How long a streaming frame waits for audio after its own time.
#: (A frame between two posterior rows interpolates them: one more hop.)
LOOKAHEAD_MS: Final = (max(CONTEXT) + _SMOOTH + 1) * HOP_MS + WIN_MS / 2.0 + 1.0  # 93.5 ms

#: Frames quieter than this (natural log of mean power; -60 dBFS) are silence (Rest).
SILENCE_GATE: Final = math.log(1e-6)
N_FEATURES: Final = N_MELS + 2  # log-mel relative to the tracked peak, peak-relative energy, abs
_LOG_FLOOR: Final = math.log(1e-10)
#: Peak tracker: decays ~3 dB per second, never below -55 dBFS.
_PEAK_DECAY: Final = 0.0035
_PEAK_MIN: Final = math.log(10 ** (-55 / 10))
_N: Final = len(VISEME_CLASSES)
REST: Final = 0


class TextMismatchError(InputError):
    """The given text does not fit the audio (alignment confidence too low)."""

    code = "text_mismatch"


def _mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_inv(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=16)
def _filterbank(
    sample_rate: int, nfft: int, warp: float = 1.0
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Triangular mel filters on the rfft bins, and which bands lie above Nyquist.

    ``warp`` (training only) scales the frequency axis like a longer or shorter vocal tract
    (vocal tract length perturbation), so the model does not learn espeak's formants."""
    edges = _mel_inv(np.linspace(_mel(np.array(F_MIN)), _mel(np.array(F_MAX)), N_MELS + 2))
    freqs = np.fft.rfftfreq(nfft, 1.0 / sample_rate) * warp
    fb = np.zeros((len(freqs), N_MELS), dtype=np.float32)
    for m in range(N_MELS):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        fb[:, m] = np.maximum(0.0, np.minimum(up, down))
        s = fb[:, m].sum()
        if s > 0:
            fb[:, m] /= s
    missing = edges[2:] > sample_rate / 2.0 * 0.98
    return fb, missing


class FrontEnd:
    """Streaming log-mel features: push float samples in [-1, 1], get feature rows out.

    Frame ``i`` is centred on sample ``round(i * sample_rate / 100)``; the first frame is at 0
    (the signal is zero-padded before it). The features of a frame need half a window of audio
    after its centre."""

    def __init__(self, sample_rate: int, *, warp: float = 1.0) -> None:
        if sample_rate < 4000 or sample_rate > 192000:
            raise InputError(f"sample rate {sample_rate} Hz is not supported (4–192 kHz)")
        self.sample_rate = sample_rate
        self.win = round(WIN_MS * sample_rate / 1000.0)
        self.half = self.win // 2
        self.nfft = 1 << (self.win - 1).bit_length()
        self.window = np.hanning(self.win).astype(np.float32)
        self.fb, self.missing = _filterbank(sample_rate, self.nfft, warp)
        self._buf = np.zeros(self.half, dtype=np.float32)  # zero padding before sample 0
        self._buf_start = -self.half  # absolute sample index of _buf[0]
        self.frames = 0  # frames emitted
        self._peak = _PEAK_MIN

    def _center(self, i: int) -> int:
        return round(i * self.sample_rate / 100.0)

    def push(self, samples: FloatArray) -> FloatArray:
        """Features (rows of :data:`N_FEATURES`) of every frame whose window is complete."""
        if len(samples):
            self._buf = np.concatenate([self._buf, samples.astype(np.float32, copy=False)])
        end = self._buf_start + len(self._buf)
        n = 0
        while self._center(self.frames + n) + self.win - self.half <= end:
            n += 1
        return self._emit(n)

    def flush(self) -> FloatArray:
        """The frames whose centre lies within the audio, the missing tail zero-padded."""
        end = self._buf_start + len(self._buf)
        n = 0
        while self._center(self.frames + n) < end:
            n += 1
        self._buf = np.concatenate([self._buf, np.zeros(self.win, dtype=np.float32)])
        return self._emit(n)

    def _emit(self, n: int) -> FloatArray:
        if n == 0:
            return np.zeros((0, N_FEATURES), dtype=np.float32)
        idx_f = np.arange(self.frames, self.frames + n, dtype=np.float64)
        starts = np.round(idx_f * self.sample_rate / 100.0).astype(np.int64)
        starts -= self.half + self._buf_start
        idx = starts[:, None] + np.arange(self.win)[None, :]
        frames = self._buf[idx] * self.window
        spec = np.abs(np.fft.rfft(frames, n=self.nfft, axis=1)).astype(np.float32) ** 2
        mel = np.log(spec @ self.fb + 1e-10)
        mel[:, self.missing] = _LOG_FLOOR
        energy = np.log((frames * frames).mean(axis=1) + 1e-10)
        out = np.empty((n, N_FEATURES), dtype=np.float32)
        peak = self._peak
        for k in range(n):  # a cheap scalar recursion (one per 10 ms)
            peak = max(float(energy[k]), peak - _PEAK_DECAY, _PEAK_MIN)
            out[k, :N_MELS] = mel[k] - peak
            out[k, N_MELS] = energy[k] - peak
        self._peak = peak
        out[:, N_MELS + 1] = np.maximum(energy, math.log(1e-9)) / 10.0
        np.maximum(out[:, :N_MELS], -25.0, out=out[:, :N_MELS])
        self.frames += n
        keep_from = self._center(self.frames) - self.half - self._buf_start
        if keep_from > 0:
            self._buf = self._buf[keep_from:]
            self._buf_start += keep_from
        return out


def features(samples: FloatArray, sample_rate: int, *, warp: float = 1.0) -> FloatArray:
    """Whole-signal features (one row per 10 ms, the first centred on sample 0)."""
    fe = FrontEnd(sample_rate, warp=warp)
    return np.concatenate([fe.push(samples), fe.flush()])


def stack(feats: FloatArray) -> FloatArray:
    """Stack :data:`CONTEXT` frames around each row (edges repeat the first/last row)."""
    n = len(feats)
    lo, hi = -min(CONTEXT), max(CONTEXT)
    first = feats[:1]
    padded = np.concatenate(
        [np.repeat(first, lo, axis=0), feats, np.repeat(feats[-1:], hi, axis=0)]
    )
    return np.concatenate([padded[lo + c : lo + c + n] for c in CONTEXT], axis=1)


@dataclass(frozen=True)
class VisemeNet:
    """The shipped model: input normalisation, two ReLU layers, a softmax over the classes."""

    mean: FloatArray
    std: FloatArray
    w1: FloatArray
    b1: FloatArray
    w2: FloatArray
    b2: FloatArray
    w3: FloatArray
    b3: FloatArray
    log_prior: FloatArray  # log class frequencies in the training data (for alignment)

    def log_posteriors(self, stacked: FloatArray) -> FloatArray:
        x = (stacked - self.mean) / self.std
        h = np.maximum(x @ self.w1 + self.b1, 0.0)
        h = np.maximum(h @ self.w2 + self.b2, 0.0)
        z = h @ self.w3 + self.b3
        z -= z.max(axis=1, keepdims=True)
        out: FloatArray = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return out

    def posteriors(self, stacked: FloatArray) -> FloatArray:
        return np.exp(self.log_posteriors(stacked)).astype(np.float32)

    def to_arrays(self) -> dict[str, FloatArray]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


MODEL_FILE: Final = "audio_visemes.npz"


@lru_cache(maxsize=1)
def load_model() -> VisemeNet:
    """The model shipped inside the package (no download)."""
    ref = resources.files("lipcore").joinpath("data", MODEL_FILE)
    with resources.as_file(ref) as path, np.load(path) as z:
        return VisemeNet(**{k: z[k].astype(np.float32) for k in VisemeNet.__dataclass_fields__})


# --------------------------------------------------------------------------- frames out


def smooth(post: FloatArray) -> FloatArray:
    """Centred 3-frame mean of the posteriors (edges repeat)."""
    if len(post) < 2:
        return post
    p = np.concatenate([post[:1], post, post[-1:]])
    out: FloatArray = (p[:-2] + p[1:-1] + p[2:]) / 3.0
    return out


_CLOSURES: Final = frozenset(VISEME_CLASSES.index(c) for c in ("MBP", "FV"))


def weights_from_posterior(p: npt.NDArray[np.floating]) -> dict[str, float]:
    """One frame's viseme weights: the posterior sharpened (squared, renormalised), Rest the
    remainder, weights under 0.05 dropped; a dominant closure (MBP, FV) takes the whole frame."""
    q = np.asarray(p, dtype=np.float64) ** 2
    q /= max(float(q.sum()), 1e-12)
    top = int(np.argmax(q))
    if top in _CLOSURES and q[top] >= 0.4:
        # A closure reaches its full shape (as the mapper's do): lips 30 % apart look open.
        return {VISEME_CLASSES[top]: 1.0}
    return {VISEME_CLASSES[c]: round(float(q[c]), 4) for c in range(1, _N) if q[c] >= 0.05}


def closure_window(t: float, fps: float) -> int:
    """The first posterior row a frame at ``t`` looks back to for a closure: half a frame
    period. A /p/ closure lasts 30–60 ms, shorter than a 25 fps frame; sampled only at the
    frame's own time it falls between frames and the lips never close, so a frame shows a
    closure that was dominant in the half frame before it (at most half a frame late)."""
    return max(0, math.ceil((t - 500.0 / fps) / HOP_MS))


def frame_weights(
    p: npt.NDArray[np.floating], window: npt.NDArray[np.floating]
) -> dict[str, float]:
    """A frame's weights from its interpolated posterior ``p`` and the rows of its closure
    look-back ``window`` (see :func:`closure_window`)."""
    w = weights_from_posterior(p)
    if len(w) == 1 and next(iter(w.values())) == 1.0:
        return w
    if len(window):
        q = np.asarray(window, dtype=np.float64) ** 2
        q /= np.maximum(q.sum(axis=1, keepdims=True), 1e-12)
        top = q.argmax(axis=1)
        for r in range(len(q) - 1, -1, -1):
            c = int(top[r])
            if c in _CLOSURES and q[r, c] >= 0.4:
                return {VISEME_CLASSES[c]: 1.0}
    return w


def frames_from_posteriors(
    post: FloatArray, *, fps: float, first: int, count: int
) -> list[VisemeFrame]:
    """Frames ``first .. first+count-1`` at ``fps`` from smoothed posteriors at 100 Hz (row
    ``i`` at ``i * 10`` ms), linearly interpolated (see :func:`frame_weights`)."""
    out: list[VisemeFrame] = []
    n = len(post)
    for j in range(first, first + count):
        t = j * 1000.0 / fps
        x = t / HOP_MS
        i = min(int(x), n - 1)
        f = x - i
        p = post[i] if i + 1 >= n else post[i] * (1.0 - f) + post[i + 1] * f
        lo = min(closure_window(t, fps), i)
        out.append(VisemeFrame(pts_ms=t, weights=frame_weights(p, post[lo : i + 1])))
    return out


# --------------------------------------------------------------------------- text known


@dataclass(frozen=True, slots=True)
class _State:
    cls: int
    phoneme: int  # index into the phoneme list, -1 for an optional pause
    optional: bool
    min_one: bool  # the first frame of a two-frame minimum (no self loop)


def text_states(text: str, language: str) -> tuple[list[tuple[str, int]], list[_State]]:
    """espeak's phonemes for ``text`` (with word indices) and the alignment's state chain:
    an optional Rest at the start, the end and between words; each phoneme lasts at least
    two frames (20 ms) per viseme class it moves through."""
    from lipcore.default_plugins.mapper import _espeak_language
    from lipcore.speech import _espeak

    voice = _espeak_language(language)
    clauses = _espeak.get_library().text_to_phonemes(text, voice)
    phonemes: list[tuple[str, int]] = []
    states: list[_State] = [_State(REST, -1, True, False)]
    word = -1
    for clause in clauses:
        for w in clause.split():
            word += 1
            added = False
            for ph in w.split("_"):
                if not ph or is_silence(ph):
                    continue
                try:
                    classes = phoneme_visemes(ph)
                except KeyError:
                    continue
                phonemes.append((ph, word))
                # A minimum duration per class: vowels 40 ms, consonants 20 ms, as chains
                # of states without a self loop before the looping one.
                min_frames = VOWEL_MIN_FRAMES if is_vowel(ph) else CONSONANT_MIN_FRAMES
                for cls_name in classes:
                    c = VISEME_CLASSES.index(cls_name)
                    for _ in range(max(1, min_frames // len(classes)) - 1):
                        states.append(_State(c, len(phonemes) - 1, False, True))
                    states.append(_State(c, len(phonemes) - 1, False, False))
                added = True
            if added:
                states.append(_State(REST, -1, True, False))
    if not phonemes:
        raise InputError(f"the text {text[:40]!r} has no speakable phonemes")
    return phonemes, states


#: Mean per-frame log-posterior gap (best class − aligned class) above which the text is
#: taken not to be what the audio says. Measured (bench_audio_visemes.py): the right text
#: 0.03–0.30 on espeak voices, up to 0.80 on flite's; another sentence of similar length
#: 0.32–1.25. So only a clear misfit is caught by the gap; a text much too short or too long
#: for the audio is caught by the phoneme-duration checks.
MISMATCH_GAP: Final = 0.9
#: Alignment: the lowest log posterior a frame contributes, and the minimum durations.
EMISSION_FLOOR: float = -10.0
VOWEL_MIN_FRAMES: int = 4
CONSONANT_MIN_FRAMES: int = 2
#: Mean speech time per phoneme above which the text is too short for the audio (slow,
#: careful speech is ~120 ms per phoneme).
MAX_PHONEME_MS: Final = 350.0
#: Alignment work limit (frames × states): about 10 minutes of speech with its text.
MAX_ALIGN_CELLS: Final = 400_000_000


def align_text(
    log_post: FloatArray,
    text: str,
    language: str,
    *,
    log_prior: FloatArray,
    check: bool = True,
) -> tuple[list[PhonemeTiming], float]:
    """Viterbi-align ``text``'s phonemes to per-frame log posteriors (rows every 10 ms).

    Returns phoneme timings on the audio timeline and the mean per-frame gap between the
    best class and the aligned one (the confidence; :class:`TextMismatchError` above
    :data:`MISMATCH_GAP` when ``check``)."""
    phonemes, states = text_states(text, language)
    t_n, s_n = len(log_post), len(states)
    required = sum(1 for s in states if not s.optional)
    if required > t_n:
        raise TextMismatchError(
            f"the text has {len(phonemes)} phonemes, too many for {t_n * HOP_MS / 1000:.1f} s "
            "of audio: is it the text of this recording?"
        )
    speech_ms = float((log_post.argmax(axis=1) != REST).sum()) * HOP_MS
    if speech_ms / len(phonemes) > MAX_PHONEME_MS:
        raise TextMismatchError(
            f"the text does not match the audio: {len(phonemes)} phonemes for "
            f"{speech_ms / 1000:.1f} s of speech (over {MAX_PHONEME_MS:.0f} ms each); give the "
            "words the recording says, or leave out the text"
        )
    if t_n * s_n > MAX_ALIGN_CELLS:
        raise InputError(
            f"aligning {len(phonemes)} phonemes to {t_n * HOP_MS / 60000:.1f} min of audio is "
            "too much work for one piece; split the audio and its text (or drop --text)"
        )
    # Scaled likelihoods (posterior / prior), a little flattened, so frequent classes such as
    # E do not swallow their neighbours; floored, so one confidently wrong frame of the model
    # cannot drag a whole stretch of phonemes out of place (the text's order decides there).
    emis = (np.maximum(log_post, EMISSION_FLOOR) - 0.5 * log_prior[None, :]).astype(np.float32)
    cls = np.array([s.cls for s in states])
    can_stay = np.array([not s.min_one for s in states])
    skippable = np.array([s.optional for s in states])
    neg = np.float32(-1e30)
    delta = np.full(s_n, neg, dtype=np.float32)
    delta[0] = emis[0, cls[0]]
    delta[1] = emis[0, cls[1]]
    back = np.zeros((t_n, s_n), dtype=np.uint8)  # 0 stay, 1 from s-1, 2 from s-2
    skip_ok = np.zeros(s_n, dtype=bool)
    skip_ok[2:] = skippable[1:-1]
    for t in range(1, t_n):
        stay = np.where(can_stay, delta, neg)
        adv1 = np.concatenate([[neg], delta[:-1]])
        adv2 = np.where(skip_ok, np.concatenate([[neg, neg], delta[:-2]]), neg)
        best = np.maximum(np.maximum(stay, adv1), adv2)
        choice = np.where(best == stay, 0, np.where(best == adv1, 1, 2)).astype(np.uint8)
        back[t] = choice
        delta = best + emis[t, cls]
    end = s_n - 1 if delta[s_n - 1] >= delta[s_n - 2] else s_n - 2
    path = np.empty(t_n, dtype=np.int64)
    s = end
    for t in range(t_n - 1, -1, -1):
        path[t] = s
        s -= int(back[t, s])
    gap = float(np.mean(log_post.max(axis=1) - log_post[np.arange(t_n), cls[path]]))
    if check and gap > MISMATCH_GAP:
        raise TextMismatchError(
            f"the text does not match the audio (alignment gap {gap:.2f} per frame, limit "
            f"{MISMATCH_GAP}): give the words the recording says, or leave out the text"
        )
    spans: dict[int, list[int]] = {}
    for t, st in enumerate(path):
        p = states[int(st)].phoneme
        if p >= 0:
            span = spans.setdefault(p, [t, t])
            span[1] = t
    out: list[PhonemeTiming] = []
    for p, (a, b) in sorted(spans.items()):
        ph, word = phonemes[p]
        out.append(
            PhonemeTiming(
                phoneme=ph,
                start_ms=max(0.0, (a - 0.5) * HOP_MS),
                end_ms=(b + 0.5) * HOP_MS,
                word=word,
            )
        )
    return out, gap


def as_float(pcm: bytes | npt.NDArray[np.int16]) -> FloatArray:
    """s16le bytes (or int16 samples) → float32 in [-1, 1]."""
    a = np.frombuffer(pcm, dtype="<i2") if isinstance(pcm, (bytes, bytearray)) else pcm
    return (a.astype(np.float32) / 32768.0).astype(np.float32)
