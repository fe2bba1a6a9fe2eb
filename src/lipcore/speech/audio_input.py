"""Reading speech from files for the audio-only paths (``say --audio``, ``visemes --audio``).

Any container and codec FFmpeg (PyAV) decodes: WAV, MP3, OGG/Opus/Vorbis, M4A/AAC, FLAC.
Audio comes out as mono ``int16`` at the file's own sample rate; more channels are mixed down
(stereo → mono is the defined behaviour: the mouth follows the sum of both channels).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lipcore.errors import InputError
from lipcore.interfaces import VisemeFrame

__all__ = [
    "AudioFileError",
    "AudioInfo",
    "LeadShifter",
    "decode_audio_bytes",
    "iter_audio",
    "probe_audio",
    "read_audio",
]

#: Longest file read whole into memory (``say --audio``, ``--text``): 30 minutes.
MAX_WHOLE_S = 30 * 60.0


class AudioFileError(InputError):
    """The file is missing, not audio, or cannot be decoded."""

    code = "bad_audio"


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int
    duration_s: float | None  # None when the container does not say
    codec: str


def _open(path: str | os.PathLike[str]) -> Any:
    import av

    p = Path(path)
    if not p.is_file():
        raise AudioFileError(f"audio file not found: {p}")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise AudioFileError(f"{p.name} is not a readable audio file: {exc}") from None
    if not container.streams.audio:
        container.close()
        raise AudioFileError(f"{p.name} has no audio stream")
    return container


def probe_audio(path: str | os.PathLike[str]) -> AudioInfo:
    """Sample rate, channels, duration and codec of the file's first audio stream."""
    container = _open(path)
    try:
        s = container.streams.audio[0]
        duration = None
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000.0
        rate = s.codec_context.sample_rate or s.rate
        channels = s.codec_context.channels if hasattr(s.codec_context, "channels") else 1
        return AudioInfo(int(rate), int(channels or 1), duration, s.codec_context.name)
    finally:
        container.close()


def iter_audio(
    path: str | os.PathLike[str], *, chunk_s: float = 0.5
) -> Iterator[tuple[npt.NDArray[np.int16], int]]:
    """Decode the file in pieces of about ``chunk_s``: ``(mono int16 samples, sample_rate)``.
    Memory stays bounded whatever the file's length."""
    import av

    container = _open(path)
    name = Path(path).name
    try:
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or stream.rate or 0)
        if rate <= 0:
            raise AudioFileError(f"{name}: the audio stream has no sample rate")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
        pending: list[npt.NDArray[np.int16]] = []
        held = 0
        target = max(1, int(chunk_s * rate))
        got_any = False
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    a = out.to_ndarray().reshape(-1).astype(np.int16, copy=False)
                    pending.append(a)
                    held += len(a)
                if held >= target:
                    got_any = True
                    yield np.concatenate(pending), rate
                    pending, held = [], 0
            for out in resampler.resample(None):
                pending.append(out.to_ndarray().reshape(-1).astype(np.int16, copy=False))
        except av.error.FFmpegError as exc:
            raise AudioFileError(f"{name} is damaged: decoding failed ({exc})") from None
        if pending:
            tail = np.concatenate(pending)
            if len(tail):
                got_any = True
                yield tail, rate
        if not got_any:
            raise AudioFileError(f"{name} holds no audio samples")
    finally:
        container.close()


def read_audio(
    path: str | os.PathLike[str], *, max_s: float = MAX_WHOLE_S
) -> tuple[npt.NDArray[np.int16], int]:
    """The whole file as mono int16 and its sample rate (at most ``max_s`` seconds)."""
    parts: list[npt.NDArray[np.int16]] = []
    rate = 0
    total = 0
    for a, rate in iter_audio(path):
        parts.append(a)
        total += len(a)
        if total > max_s * rate:
            raise AudioFileError(
                f"{Path(path).name} is longer than {max_s / 60:.0f} minutes; for a long file use "
                "`lipcore visemes --audio` (it streams) or split the file"
            )
    return np.concatenate(parts), rate


class LeadShifter:
    """Moves frames ``lead_ms`` earlier (the mouth leads the audio, as the engine does for
    TTS), incrementally: frames that would fall before 0 collapse onto 0, the latest wins."""

    def __init__(self, lead_ms: float) -> None:
        self.lead_ms = lead_ms
        self._held: VisemeFrame | None = None  # the latest collapsed frame, not yet sent
        self._last = -1.0

    def push(self, frames: Sequence[VisemeFrame]) -> list[VisemeFrame]:
        out: list[VisemeFrame] = []
        for f in frames:
            t = f.pts_ms - self.lead_ms
            if t <= 0.0:
                self._held = VisemeFrame(0.0, f.weights)
                continue
            if self._held is not None:
                out.append(self._held)
                self._last = 0.0
                self._held = None
            if t > self._last:
                out.append(VisemeFrame(t, f.weights))
                self._last = t
        return out

    def finish(self) -> list[VisemeFrame]:
        out = [self._held] if self._held is not None else []
        self._held = None
        return out


def shift_frames(frames: Sequence[VisemeFrame], lead_ms: float) -> list[VisemeFrame]:
    """:class:`LeadShifter` over a whole list."""
    s = LeadShifter(lead_ms)
    return [*s.push(frames), *s.finish()]


def decode_audio_bytes(
    data: bytes, sample_rate: int, *, name: str = "audio", max_s: float = 10 * 60.0
) -> bytes:
    """An uploaded audio file (any format PyAV reads) → mono ``s16le`` at ``sample_rate``
    (the rate a session's client plays), at most ``max_s`` seconds."""
    import io

    import av

    try:
        container = av.open(io.BytesIO(data), "r")
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise AudioFileError(f"{name} is not a readable audio file: {exc}") from None
    out: list[bytes] = []
    total = 0
    try:
        if not container.streams.audio:
            raise AudioFileError(f"{name} has no audio stream")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
        try:
            for frame in container.decode(container.streams.audio[0]):
                for piece in resampler.resample(frame):
                    b = piece.to_ndarray().reshape(-1).astype("<i2").tobytes()
                    out.append(b)
                    total += len(b)
                if total > max_s * sample_rate * 2:
                    raise AudioFileError(f"{name} is longer than {max_s / 60:.0f} minutes")
            for piece in resampler.resample(None):
                out.append(piece.to_ndarray().reshape(-1).astype("<i2").tobytes())
        except av.error.FFmpegError as exc:
            raise AudioFileError(f"{name} is damaged: decoding failed ({exc})") from None
    finally:
        container.close()
    pcm = b"".join(out)
    if not pcm:
        raise AudioFileError(f"{name} holds no audio samples")
    return pcm


ProgressFn = Callable[[float], None]
