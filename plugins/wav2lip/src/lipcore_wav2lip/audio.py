"""Wav2Lip's audio front end in numpy: 16 kHz audio → 80-bin mel → one 16-column window per frame.

The settings are the ones the public checkpoint was trained with (Wav2Lip's ``hparams.py``):

* resample to 16 kHz (soxr HQ: its streaming hold-back is ≤ 40 ms, VHQ's up to 85 ms), float
  in [-1, 1]; pre-emphasis ``y[n] = x[n] - 0.97 x[n-1]``;
* STFT: n_fft 800, hop 200 (12.5 ms, so 80 mel frames per second), periodic Hann window of 800,
  centred frames with *reflect* padding (librosa 0.7's default, which Wav2Lip used; librosa ≥ 0.10
  defaults to zero padding, so pass ``pad_mode="reflect"`` when comparing);
* magnitude → 80 Slaney mel filters (55–7600 Hz, Slaney area normalisation, librosa's default);
* ``20·log10(max(1e-5, mel)) - 20`` dB, then symmetric scaling of [-100, 0] dB to [-4, 4], clipped.

Frame alignment: video frame ``i`` at ``fps`` uses mel columns ``[s, s + 16)`` with
``s = int(80 * (i - 1) / fps)``: the window starts one frame *before* the frame's time and covers
200 ms. That is the pairing the generator was trained on, not the one of Wav2Lip's
``inference.py`` (``int(80 * i / fps)``). In ``wav2lip_train.py`` the 5 frames ``s … s+4`` (file
names are 0-based frame numbers, preprocess.py) get ``get_segmented_mels``: ``start_frame_num =
s + 1`` and ``crop_audio_window(spec, i - 2)`` for ``i`` in ``s+1 … s+5``, so frame ``f`` gets
the window starting at ``int(80 * (f - 1) / fps)``; the SyncNet expert that judges the output
pairs the same 5 frames with the window starting at ``int(80 * s / fps)`` (the frames' own
time), i.e. it calls a mouth in sync when it matches that pairing. Fed the inference script's
window, the released weights draw frame ``f`` with the audio they learned for ``f + 1``: the
mouth one frame (40 ms at 25 fps) early. Columns before the start and past the end of the audio
are digital silence (-4), so an utterance of ``d`` seconds gets ``ceil(d * fps)`` frames (and a
frame becomes computable one frame sooner when streaming).

:class:`StreamingMel` computes the same columns incrementally: column ``t`` is final once the
audio reaches sample ``200 t + 400`` (its right half-window), so the result never depends on how
the audio was chunked.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import soxr

from lipcore.errors import InputError

__all__ = [
    "HOP",
    "MEL_FPS",
    "MEL_WINDOW",
    "N_FFT",
    "N_MELS",
    "SAMPLE_RATE",
    "SILENCE",
    "WINDOW_OFFSET_FRAMES",
    "StreamingMel",
    "frame_count",
    "mel_filters",
    "mel_spectrogram",
    "mel_windows",
    "pcm_to_float",
    "window_start",
]

SAMPLE_RATE = 16_000
N_FFT = 800
HOP = 200
WIN = 800
N_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
REF_LEVEL_DB = 20.0
MIN_LEVEL_DB = -100.0
MAX_ABS_VALUE = 4.0
MEL_FPS = SAMPLE_RATE / HOP  # 80 mel columns per second
MEL_WINDOW = 16  # columns per video frame (200 ms)
SILENCE = -MAX_ABS_VALUE  # the normalised value of digital silence

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def _hz_to_mel(f: F64) -> F64:
    # Slaney's auditory-toolbox scale: linear below 1 kHz, logarithmic above.
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    mel = f / f_sp
    log_part = f >= min_log_hz
    mel[log_part] = min_log_mel + np.log(f[log_part] / min_log_hz) / logstep
    return mel


def _mel_to_hz(m: F64) -> F64:
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    f = f_sp * m
    log_part = m >= min_log_mel
    f[log_part] = min_log_hz * np.exp(logstep * (m[log_part] - min_log_mel))
    return f


def mel_filters(
    sr: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    n_mels: int = N_MELS,
    fmin: float = FMIN,
    fmax: float = FMAX,
) -> F64:
    """Triangular Slaney mel filters, area-normalised: shape ``(n_mels, 1 + n_fft // 2)``."""
    fft_freqs = np.linspace(0.0, sr / 2.0, 1 + n_fft // 2)
    mel_pts = np.linspace(
        _hz_to_mel(np.array([fmin]))[0], _hz_to_mel(np.array([fmax]))[0], n_mels + 2
    )
    hz_pts = _mel_to_hz(mel_pts)
    fdiff = np.diff(hz_pts)
    ramps = hz_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz_pts[2 : n_mels + 2] - hz_pts[:n_mels]))[:, None]
    return weights


_WINDOW = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN) / WIN)  # periodic Hann
_MEL_BASIS = mel_filters()
_MIN_LEVEL = 10.0 ** (MIN_LEVEL_DB / 20.0)


def pcm_to_float(pcm: bytes | bytearray | memoryview | npt.ArrayLike) -> F32:
    """Mono audio as float32 in [-1, 1]: s16le bytes, an int16 array or a float array."""
    if isinstance(pcm, bytes | bytearray | memoryview):
        raw = bytes(pcm)
        if len(raw) % 2:
            raise InputError(
                f"PCM audio must be s16le (2 bytes per sample); got {len(raw)} bytes, an odd "
                "count. Send whole samples."
            )
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    arr = np.asarray(pcm)
    if arr.ndim != 1:
        raise InputError(f"audio must be mono (1-D); got an array of shape {arr.shape}")
    if arr.dtype == np.int16:
        return arr.astype(np.float32) / 32768.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"audio must be int16 or float samples; got dtype {arr.dtype}")
    return arr.astype(np.float32, copy=False)


def _columns(frames: F64) -> F32:
    """Windowed frames ``(n, 800)`` (pre-emphasised) → normalised mel columns ``(80, n)``."""
    spec = np.abs(np.fft.rfft(frames * _WINDOW, n=N_FFT, axis=1))  # (n, 401)
    mel = _MEL_BASIS @ spec.T  # (80, n)
    db = 20.0 * np.log10(np.maximum(_MIN_LEVEL, mel)) - REF_LEVEL_DB
    norm = (2 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    out: F32 = np.clip(norm, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)
    return out


def _preemphasis(x: F64, previous: float = 0.0) -> F64:
    y = x.copy()
    if len(x):
        y[0] = x[0] - PREEMPHASIS * previous
        y[1:] = x[1:] - PREEMPHASIS * x[:-1]
    return y


def _frames(padded: F64, first: int, count: int) -> F64:
    """``count`` frames of 800 samples from ``padded`` starting at hop index ``first``."""
    idx = (first + np.arange(count))[:, None] * HOP + np.arange(N_FFT)[None, :]
    out: F64 = padded[idx]
    return out


def mel_spectrogram(audio: npt.ArrayLike) -> F32:
    """Wav2Lip's normalised mel spectrogram of 16 kHz float audio: ``(80, 1 + len // 200)``."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1:
        raise InputError(f"audio must be mono (1-D); got an array of shape {x.shape}")
    if len(x) <= N_FFT // 2:
        # Reflect padding needs more samples than half a window; pad tiny clips with silence.
        x = np.concatenate([x, np.zeros(N_FFT // 2 + 1 - len(x))])
    y = _preemphasis(x)
    pad = N_FFT // 2
    padded = np.pad(y, pad, mode="reflect")
    n = 1 + len(y) // HOP
    return _columns(_frames(padded, 0, n))


#: Frames the mel window starts before the frame's own time (Wav2Lip's training code; see the
#: module docstring: 1, not inference.py's 0).
WINDOW_OFFSET_FRAMES = 1


def window_start(frame: int, fps: float) -> int:
    """First mel column of video frame ``frame``: ``int(80 * (frame - 1) / fps)``, the training
    alignment (negative for frame 0: the columns before the audio are silence)."""
    return int(MEL_FPS * (frame - WINDOW_OFFSET_FRAMES) / fps)


def frame_count(n_samples: int, fps: float, sample_rate: int = SAMPLE_RATE) -> int:
    """Video frames for ``n_samples`` of audio: ``ceil(duration * fps)``."""
    return math.ceil(round(n_samples / sample_rate * fps, 9))


def mel_windows(mel: F32, frames: range | list[int], fps: float) -> F32:
    """The model's audio input for ``frames``: ``(len(frames), 1, 80, 16)``; columns past the end
    of ``mel`` are silence."""
    out = np.full((len(frames), 1, N_MELS, MEL_WINDOW), SILENCE, dtype=np.float32)
    cols = mel.shape[1]
    for k, i in enumerate(frames):
        s = window_start(i, fps)
        lo = max(s, 0)  # columns before the audio (frame 0) stay silence
        e = min(s + MEL_WINDOW, cols)
        if e > lo:
            out[k, 0, :, lo - s : e - s] = mel[:, lo:e]
    return out


class StreamingMel:
    """Mel columns computed as audio arrives, identical to :func:`mel_spectrogram` of the whole.

    ``push(samples)`` (16 kHz float) returns nothing; read :attr:`mel` (the final columns so far)
    and :attr:`samples`. ``finish()`` computes the columns that need the end of the audio (the
    right reflect padding).
    """

    def __init__(self) -> None:
        self._y = np.zeros(0, dtype=np.float64)  # pre-emphasised audio kept for the next frames
        self._y_offset = 0  # absolute sample index of self._y[0]
        self._head = np.zeros(0, dtype=np.float64)  # first 401 pre-emphasised samples (reflect)
        self._prev = 0.0
        self.samples = 0
        self._cols: list[F32] = []
        self._n_cols = 0
        self.finished = False

    @property
    def columns(self) -> int:
        return self._n_cols

    @property
    def mel(self) -> F32:
        if len(self._cols) > 1:
            self._cols = [np.concatenate(self._cols, axis=1)]
        return self._cols[0] if self._cols else np.zeros((N_MELS, 0), dtype=np.float32)

    def push(self, audio: npt.ArrayLike) -> int:
        """Add 16 kHz float samples; returns how many final columns exist now."""
        if self.finished:
            raise InputError("this audio stream is finished; start a new one for more audio")
        x = np.asarray(audio, dtype=np.float64).ravel()
        if not len(x):
            return self._n_cols
        y = _preemphasis(x, self._prev)
        self._prev = float(x[-1])
        if len(self._head) <= N_FFT // 2:
            self._head = np.concatenate([self._head, y[: N_FFT // 2 + 1 - len(self._head)]])
        self._y = np.concatenate([self._y, y])
        self.samples += len(x)
        self._compute(final=False)
        return self._n_cols

    def _padded_slice(self, start: int, end: int) -> F64:
        """Pre-emphasised samples ``[start, end)`` in padded-less absolute indices, where
        negative indices reflect the head (``y[-k] = y[k]``)."""
        parts = []
        if start < 0:
            left = self._head[1 : -start + 1][::-1]
            parts.append(left)
            start = 0
        parts.append(self._y[start - self._y_offset : end - self._y_offset])
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _compute(self, *, final: bool) -> None:
        half = N_FFT // 2
        if final:
            total = 1 + self.samples // HOP
        else:
            # Column t spans samples [200 t - 400, 200 t + 400): final once they have all arrived
            # (and, for the first columns, once the head for the reflection is complete).
            if len(self._head) <= half:
                return
            total = max(0, (self.samples - half) // HOP + 1)
        if total <= self._n_cols:
            return
        first = self._n_cols
        start = first * HOP - half
        if final:
            end = (total - 1) * HOP + half
            seg = self._padded_slice(start, min(end, self.samples))
            short = (end - start) - len(seg)
            if short > 0:
                # Right reflect padding, as in the offline transform: y[n + k] = y[n - 2 - k].
                tail_src = self._y[: self.samples - self._y_offset]
                seg = np.concatenate([seg, tail_src[-2 : -2 - short : -1]])
        else:
            end = (total - 1) * HOP + half
            seg = self._padded_slice(start, end)
        # Frames are strided views of seg (hop 200, length 800).
        idx = np.arange(total - first)[:, None] * HOP + np.arange(N_FFT)[None, :]
        self._cols.append(_columns(seg[idx]))
        self._n_cols = total
        # Keep only what the next column needs.
        keep_from = max(0, self._n_cols * HOP - half)
        drop = keep_from - self._y_offset
        if drop > 0:
            self._y = self._y[drop:]
            self._y_offset = keep_from

    def finish(self) -> F32:
        """Compute the last columns (right padding) and return the whole spectrogram."""
        if not self.finished:
            if self.samples <= N_FFT // 2:
                # Same silence padding as mel_spectrogram for tiny clips.
                pad = np.zeros(N_FFT // 2 + 1 - self.samples)
                self.push(pad)
            self._compute(final=True)
            self.finished = True
        return self.mel


class Resampler:
    """Streaming resampler to 16 kHz (soxr); the identity at 16 kHz."""

    def __init__(self, sample_rate: int) -> None:
        if not isinstance(sample_rate, int) or not 4000 <= sample_rate <= 192_000:
            raise InputError(
                f"sample_rate must be an integer between 4000 and 192000 Hz; got {sample_rate!r}"
            )
        self.sample_rate = sample_rate
        self._stream = (
            None
            if sample_rate == SAMPLE_RATE
            else soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
        )

    def push(self, audio: F32, *, last: bool = False) -> F32:
        if self._stream is None:
            return audio
        return np.asarray(self._stream.resample_chunk(audio, last=last), dtype=np.float32)
