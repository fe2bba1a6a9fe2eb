"""Video files in and out: H.264 + AAC in MP4 that plays everywhere (PyAV).

What "plays everywhere" means here (browsers, Flutter's ``video_player`` on iOS and Android):

* H.264 (libx264), **Main** profile, 4:2:0 (``yuv420p``), BT.709 limited range, tagged as such;
  the level is left to x264, which picks the lowest one the size and rate need.
* Even width and height (4:2:0 needs them): odd sizes are padded by one replicated edge pixel
  on the right/bottom, so pixel coordinates of the content do not change.
* Constant frame rate: frame ``i`` has pts ``i`` in a ``1/fps`` time base.
* ``movflags=+faststart``: the ``moov`` index precedes the media data, so players start at once
  over HTTP without range-seeking to the end of the file.
* Audio (optional): mono signed 16-bit PCM at any rate; AAC-LC at 44.1 or 48 kHz. Other rates
  are resampled with soxr (high quality) to 48 kHz. Audio is interleaved with the video as the
  frames are written.

    write_mp4("idle.mp4", frames, fps=25)                        # all at once
    with VideoWriter("talk.mp4", fps=25, audio=pcm, sample_rate=22050) as w:
        for frame in frames:                                     # or one by one
            w.write(frame)
    info = probe("talk.mp4")                                     # MediaInfo
    for rgb in read_frames("talk.mp4"): ...
"""

from __future__ import annotations

import os
import queue
import struct
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import cv2
import numpy as np
from av.video.reformatter import Colorspace

from lipcore.errors import InputError, LipcoreError

__all__ = [
    "AAC_SAMPLE_RATES",
    "MediaError",
    "MediaInfo",
    "VideoWriter",
    "mp4_top_level_boxes",
    "probe",
    "read_frames",
    "rgb_to_i420",
    "update_i420_region",
    "write_mp4",
]

#: Output rates we encode AAC at (what every mobile decoder handles).
AAC_SAMPLE_RATES = (44100, 48000)
_AUDIO_OUT_RATE = 48000
_MAX_SIDE = 4096  # H.264 level 5.1 tops out around 4096×2304; beyond is not a sane avatar

ProgressCallback = Callable[[float], None]


class MediaError(LipcoreError):
    """A media file could not be written or read (disk, codec, corrupt file)."""

    code = "media_error"


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What :func:`probe` finds in a media file."""

    width: int
    height: int
    fps: float
    frames: int
    duration_s: float
    audio_sample_rate: int | None
    audio_duration_s: float | None
    video_codec: str = ""
    pix_fmt: str = ""
    profile: str = ""
    level: float = 0.0  # H.264 level, e.g. 3.2
    audio_codec: str | None = None
    faststart: bool = False


def _fps_fraction(fps: float) -> Fraction:
    if not np.isfinite(fps) or fps <= 0 or fps > 240:
        raise InputError(f"fps must be a positive frame rate up to 240, got {fps!r}")
    # 29.97 → 30000/1001, 25 → 25/1
    return Fraction(fps).limit_denominator(1001)


def _as_rgb_frame(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """Validate one frame and pad it to the even output size (edge replicated)."""
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] not in (3, 4):
        shape = getattr(frame, "shape", None)
        raise InputError(f"a video frame must be an H×W×3 RGB uint8 array, got shape {shape}")
    if frame.shape[2] == 4:
        frame = frame[:, :, :3]
    if frame.dtype != np.uint8:
        raise InputError(f"a video frame must be uint8, got {frame.dtype}")
    h, w = frame.shape[:2]
    if (h + h % 2, w + w % 2) != (height, width):
        raise InputError(
            f"all frames of a video must have one size: expected {width}×{height} "
            f"(or one pixel less, padded), got {w}×{h}"
        )
    if (h, w) != (height, width):
        frame = np.pad(frame, ((0, height - h), (0, width - w), (0, 0)), mode="edge")
    return np.ascontiguousarray(frame)


# RGB → Y'CbCr, BT.709 limited range (Y' 16..235, Cb/Cr 16..240): the matrix the writer tags
# its streams with. One row per output plane, the last column is the offset; cv2.transform
# evaluates them in float and rounds with saturation. swscale does the same conversion ~2×
# slower (it agrees within 1 level on Y'; chroma differs by a few levels at sharp colour edges,
# where its siting differs from our 2×2 box average).
_KR, _KB = 0.2126, 0.0722
_KG = 1.0 - _KR - _KB
_SY, _SC = 219.0 / 255.0, 224.0 / 255.0
_M_Y = np.array([[_SY * _KR, _SY * _KG, _SY * _KB, 16.0]])
_M_U = np.array([[-_SC * _KR / (2 - 2 * _KB), -_SC * _KG / (2 - 2 * _KB), _SC * 0.5, 128.0]])
_M_V = np.array([[_SC * 0.5, -_SC * _KG / (2 - 2 * _KR), -_SC * _KB / (2 - 2 * _KR), 128.0]])


def _i420_planes(i420: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y, U and V planes of an ``(H·3/2)×W`` I420 buffer."""
    h = i420.shape[0] * 2 // 3
    w = i420.shape[1]
    flat = i420.reshape(-1)
    q = h * w // 4
    y = i420[:h]
    u = flat[h * w : h * w + q].reshape(h // 2, w // 2)
    v = flat[h * w + q : h * w + 2 * q].reshape(h // 2, w // 2)
    return y, u, v


def rgb_to_i420(rgb: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """H×W×3 uint8 RGB (even H and W) → planar I420 (``yuv420p``), BT.709 limited range.

    Returns an ``(H·3/2)×W`` uint8 array: the Y plane, then U and V (H/2×W/2 each), the layout
    :meth:`VideoWriter.write_i420` and PyAV's ``yuv420p`` frames take. Chroma is the 2×2 box
    average. ``out`` (same shape) is filled in place if given."""
    h, w = rgb.shape[:2]
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or h % 2 or w % 2:
        raise InputError(
            f"rgb_to_i420 needs an H×W×3 uint8 frame with even sides, got {rgb.shape} {rgb.dtype}"
        )
    if out is None:
        out = np.empty((h * 3 // 2, w), np.uint8)
    elif out.shape != (h * 3 // 2, w) or out.dtype != np.uint8:
        raise InputError(f"rgb_to_i420: out must be a ({h * 3 // 2}, {w}) uint8 array")
    update_i420_region(out, rgb, 0, 0, w, h)
    return out


def update_i420_region(
    i420: np.ndarray, rgb: np.ndarray, x0: int, y0: int, x1: int, y1: int
) -> tuple[int, int, int, int]:
    """Re-convert the rectangle ``[x0, x1) × [y0, y1)`` of ``rgb`` into ``i420`` in place.

    The rectangle is widened to even coordinates (a chroma sample covers 2×2 pixels) and
    clipped to the frame; returns the rectangle actually written. This is how a frame that
    differs from a cached one only in a small region (the mouth) is converted cheaply."""
    h, w = rgb.shape[:2]
    x0, y0 = max(0, x0 - x0 % 2), max(0, y0 - y0 % 2)
    x1, y1 = min(w, x1 + x1 % 2), min(h, y1 + y1 % 2)
    if x1 <= x0 or y1 <= y0:
        return x0, y0, x0, y0
    yp, up, vp = _i420_planes(i420)
    roi = np.ascontiguousarray(rgb[y0:y1, x0:x1])
    yp[y0:y1, x0:x1] = cv2.transform(roi, _M_Y)
    half = cv2.resize(roi, ((x1 - x0) // 2, (y1 - y0) // 2), interpolation=cv2.INTER_AREA)
    up[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = cv2.transform(half, _M_U)
    vp[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = cv2.transform(half, _M_V)
    return x0, y0, x1, y1


def _pcm_to_float(audio: np.ndarray | bytes) -> np.ndarray:
    if isinstance(audio, bytes | bytearray | memoryview):
        if len(audio) % 2:
            raise InputError("PCM audio bytes must be 16-bit samples (an even byte count)")
        audio = np.frombuffer(audio, dtype="<i2")
    arr = np.asarray(audio)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise InputError(f"audio must be mono (one channel), got shape {arr.shape}")
    if arr.dtype == np.int16:
        return (arr.astype(np.float32) / 32768.0).astype(np.float32)
    if arr.dtype in (np.float32, np.float64):
        return np.clip(arr.astype(np.float32), -1.0, 1.0)
    raise InputError(f"audio must be int16 PCM (or float in [-1, 1]), got dtype {arr.dtype}")


def _resample(audio: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
    if rate in AAC_SAMPLE_RATES:
        return audio, rate
    import soxr

    out = soxr.resample(audio, rate, _AUDIO_OUT_RATE, quality="HQ")
    return np.asarray(out, dtype=np.float32), _AUDIO_OUT_RATE


class VideoWriter:
    """Streaming MP4 writer: push RGB frames one by one; audio (if any) is interleaved.

    The frame size is fixed by the first frame unless ``width``/``height`` are given. Use it as
    a context manager, or call :meth:`close` (which flushes the encoders and finishes the file).
    On an error inside the ``with`` block the partial file is removed.

    ``total_frames`` (optional) makes ``progress`` report a fraction in ``[0, 1]``.
    ``x264_params`` adds ``key=value:...`` options for libx264 (e.g. ``no-mbtree=1``).
    ``aac_coder`` picks FFmpeg's AAC coder: ``twoloop`` (its default) or ``fast`` (~3× less
    CPU, for speech at this bit rate no audible difference to us).
    ``threaded=True`` encodes on a thread of the writer's own, so the caller prepares the next
    frame meanwhile; errors of that thread surface on the next ``write`` or on ``close``.
    Frames are converted to BT.709 I420 by :func:`rgb_to_i420`; :meth:`write_i420` takes
    frames already converted.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        *,
        width: int | None = None,
        height: int | None = None,
        audio: np.ndarray | bytes | None = None,
        sample_rate: int | None = None,
        crf: int = 20,
        preset: str = "veryfast",
        keyframe_interval_s: float = 2.0,
        audio_bitrate: int = 96_000,
        x264_params: str = "",
        total_frames: int | None = None,
        progress: ProgressCallback | None = None,
        threaded: bool = False,
        aac_coder: str = "twoloop",
    ) -> None:
        self.path = Path(path)
        self.aac_coder = aac_coder
        self.rate = _fps_fraction(fps)
        self.fps = float(self.rate)
        self.crf = int(crf)
        self.preset = preset
        self.keyframe_interval_s = keyframe_interval_s
        self.x264_params = x264_params
        self.total_frames = total_frames
        self.progress = progress
        self.frames_written = 0
        self._width = width
        self._height = height
        self._container: Any = None
        self._vstream: Any = None
        self._astream: Any = None
        self._audio: np.ndarray | None = None
        self._audio_rate = 0
        self._audio_pos = 0
        self._audio_bitrate = audio_bitrate
        self._closed = False
        self._encoded = 0
        # threaded: frames go through a short queue to an encoder thread (see _work).
        self._queue: queue.Queue[np.ndarray | None] | None = (
            queue.Queue(maxsize=4) if threaded else None
        )
        #: A frame handed to :meth:`write_i420` / :meth:`write` is read no later than this
        #: many further frames have been handed over (the queue plus the one in the encoder):
        #: a caller may recycle its buffers in a ring one longer than this.
        self.frames_in_flight = 5 if threaded else 0
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None
        self._aborting = False
        if audio is not None:
            if not sample_rate or sample_rate <= 0:
                raise InputError("audio given without a positive sample_rate")
            self._audio, self._audio_rate = _resample(_pcm_to_float(audio), int(sample_rate))
        if width is not None and height is not None:
            self._open(width, height)

    # -- setup ---------------------------------------------------------------------------

    def _open(self, width: int, height: int) -> None:
        if width <= 0 or height <= 0 or max(width, height) > _MAX_SIDE:
            raise InputError(
                f"video size {width}×{height} is outside 1..{_MAX_SIDE} pixels per side"
            )
        self._width, self._height = width + width % 2, height + height % 2
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._container = av.open(
                str(self.path), mode="w", format="mp4", options={"movflags": "+faststart"}
            )
        except OSError as exc:
            raise MediaError(f"cannot write video {self.path}: {exc}") from exc
        gop = max(1, round(self.fps * self.keyframe_interval_s))
        vs = self._container.add_stream(
            "libx264",
            rate=self.rate,
            options={
                "crf": str(self.crf),
                "preset": self.preset,
                "profile": "main",
                # Explicit BT.709 limited-range tags: players otherwise guess (and differ).
                "x264-params": (
                    f"keyint={gop}:min-keyint={gop}:scenecut=0:"
                    "colorprim=bt709:transfer=bt709:colormatrix=bt709:range=tv"
                    + (f":{self.x264_params}" if self.x264_params else "")
                ),
            },
        )
        vs.width = self._width
        vs.height = self._height
        vs.pix_fmt = "yuv420p"
        vs.codec_context.time_base = 1 / self.rate
        self._vstream = vs
        if self._audio is not None:
            a = self._container.add_stream(
                "aac", rate=self._audio_rate, options={"aac_coder": self.aac_coder}
            )
            a.layout = "mono"
            a.bit_rate = self._audio_bitrate
            self._astream = a

    # -- writing -------------------------------------------------------------------------

    def write(self, frame: np.ndarray) -> None:
        """Encode one H×W×3 uint8 RGB frame (the next one at constant fps).

        With ``threaded=True`` the frame is converted and encoded on the writer's thread:
        do not modify the array after handing it over."""
        self._check_open()
        if self._container is None:
            if not isinstance(frame, np.ndarray) or frame.ndim != 3:
                _as_rgb_frame(frame, 0, 0)  # raises the input error
            self._open(frame.shape[1], frame.shape[0])
        assert self._width is not None and self._height is not None
        self._submit(_as_rgb_frame(frame, self._width, self._height))

    def write_i420(self, i420: np.ndarray) -> None:
        """Encode one frame given as planar I420 (BT.709 limited range), an ``(H·3/2)×W``
        uint8 array as :func:`rgb_to_i420` makes: no colour conversion on the writer's side.

        The array must not change until the frame is encoded (with ``threaded=True`` that is
        later than this call returns); pass a copy if you reuse the buffer."""
        self._check_open()
        if (
            not isinstance(i420, np.ndarray)
            or i420.ndim != 2
            or i420.dtype != np.uint8
            or i420.shape[0] % 3
            or (i420.shape[0] * 2 // 3) % 2
            or i420.shape[1] % 2
        ):
            shape = getattr(i420, "shape", None)
            raise InputError(
                f"an I420 frame must be an (H·3/2)×W uint8 array with even H and W, got {shape}"
            )
        h, w = i420.shape[0] * 2 // 3, i420.shape[1]
        if self._container is None:
            self._open(w, h)
        if (w, h) != (self._width, self._height):
            raise InputError(
                f"all frames of a video must have one size: expected {self._width}×"
                f"{self._height}, got an I420 frame of {w}×{h}"
            )
        self._submit(i420)

    def _check_open(self) -> None:
        if self._closed:
            raise MediaError(f"video {self.path} is already closed")
        self._raise_worker_error()

    def _submit(self, frame: np.ndarray) -> None:
        if self._queue is not None:
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="lipcore-video-writer", daemon=True
                )
                self._worker.start()
            self._queue.put(frame)
        else:
            self._encode(frame)
        self.frames_written += 1
        if self.progress is not None:
            total = self.total_frames
            self.progress(min(1.0, self.frames_written / total) if total else 0.0)

    def _encode(self, frame: np.ndarray) -> None:
        """RGB or I420 → one encoded video frame, then the audio up to its end."""
        i420 = rgb_to_i420(frame) if frame.ndim == 3 else frame
        vf = av.VideoFrame.from_ndarray(i420, format="yuv420p")
        vf.pts = self._encoded
        vf.time_base = 1 / self.rate
        self._mux(self._vstream.encode(vf))
        self._encoded += 1
        # Interleave: audio up to the end of this frame goes in now.
        self._push_audio(self._encoded / self.fps)

    def _work(self) -> None:
        # The encoder thread: PyAV releases the GIL inside libx264, so the caller renders the
        # next frames while this one encodes (and x264's own threads use the other cores).
        assert self._queue is not None
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None or self._aborting:
                continue  # drain: the caller learns of the error on its next call
            try:
                self._encode(item)
            except BaseException as exc:  # handed to the caller's thread
                self._error = exc

    def _raise_worker_error(self) -> None:
        if self._error is not None:
            exc, self._error = self._error, None
            self.abort()  # the file is unusable: remove it, as a failing ``with`` block does
            if isinstance(exc, LipcoreError):
                raise exc
            raise MediaError(f"encoding {self.path} failed: {exc}") from exc

    def _join_worker(self) -> None:
        if self._worker is not None and self._queue is not None:
            self._queue.put(None)
            self._worker.join()
            self._worker = None

    def write_many(self, frames: Iterable[np.ndarray]) -> None:
        for f in frames:
            self.write(f)

    def _mux(self, packets: Iterable[Any]) -> None:
        for p in packets:
            self._container.mux(p)

    def _push_audio(self, until_s: float | None) -> None:
        if self._astream is None or self._audio is None:
            return
        end = (
            len(self._audio)
            if until_s is None
            else min(len(self._audio), round(until_s * self._audio_rate))
        )
        if end <= self._audio_pos:
            return
        chunk = np.ascontiguousarray(self._audio[self._audio_pos : end].reshape(1, -1))
        af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        af.sample_rate = self._audio_rate
        af.pts = self._audio_pos
        af.time_base = Fraction(1, self._audio_rate)
        self._audio_pos = end
        self._mux(self._astream.encode(af))

    # -- finishing -----------------------------------------------------------------------

    def close(self) -> Path:
        """Flush encoders and finish the file; returns its path."""
        if self._closed:
            return self.path
        self._join_worker()
        self._raise_worker_error()
        self._closed = True
        if self._container is None:
            raise MediaError(f"no frames were written to {self.path}: a video needs at least one")
        try:
            self._mux(self._vstream.encode(None))
            if self._astream is not None:
                self._push_audio(None)
                self._mux(self._astream.encode(None))
        finally:
            self._container.close()
        return self.path

    def abort(self) -> None:
        """Stop without finishing; the partial file is removed."""
        self._closed = True
        self._aborting = True
        self._join_worker()
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # best effort on an already failing path
                pass
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_mp4(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: float,
    *,
    audio: np.ndarray | bytes | None = None,
    sample_rate: int | None = None,
    crf: int = 20,
    preset: str = "veryfast",
    progress: ProgressCallback | None = None,
    total_frames: int | None = None,
) -> Path:
    """Write ``frames`` (H×W×3 uint8 RGB) as an H.264/AAC MP4 (see the module docstring)."""
    if total_frames is None and hasattr(frames, "__len__"):
        total_frames = len(frames)  # type: ignore[arg-type]
    with VideoWriter(
        path,
        fps,
        audio=audio,
        sample_rate=sample_rate,
        crf=crf,
        preset=preset,
        progress=progress,
        total_frames=total_frames,
    ) as writer:
        writer.write_many(frames)
    return Path(path)


def _open_input(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"video file not found: {p}")
    try:
        return av.open(str(p), mode="r")
    except (av.FFmpegError, OSError) as exc:
        raise MediaError(f"cannot read video {p}: {exc}. Is it a valid MP4?") from exc


def read_frames(path: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """Decode the first video stream as H×W×3 uint8 RGB frames, in order."""
    container = _open_input(path)
    try:
        if not container.streams.video:
            raise MediaError(f"{path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            # Decode with the matrix we encoded with (BT.709), not swscale's BT.601 default.
            yield frame.reformat(
                format="rgb24", src_colorspace=Colorspace.ITU709, dst_colorspace=Colorspace.ITU709
            ).to_ndarray()
    except av.FFmpegError as exc:
        raise MediaError(f"cannot decode video {path}: {exc}") from exc
    finally:
        container.close()


def mp4_top_level_boxes(path: str | os.PathLike[str]) -> list[str]:
    """The top-level ISO-BMFF box types of an MP4, in file order (``ftyp``, ``moov``, ...)."""
    boxes: list[str] = []
    with open(path, "rb") as fh:
        size_total = os.fstat(fh.fileno()).st_size
        pos = 0
        while pos + 8 <= size_total:
            fh.seek(pos)
            size, kind = struct.unpack(">I4s", fh.read(8))
            if size == 1:
                (size,) = struct.unpack(">Q", fh.read(8))
            elif size == 0:
                size = size_total - pos
            boxes.append(kind.decode("latin-1"))
            if size < 8:
                break
            pos += size
    return boxes


def probe(path: str | os.PathLike[str]) -> MediaInfo:
    """Frame count, rate, duration and audio length of a media file.

    ``frames`` is counted by demuxing (exact, cheap: no decoding); durations come from the
    packet timestamps, so they describe what a player will actually play."""
    container = _open_input(path)
    try:
        if not container.streams.video:
            raise MediaError(f"{path} has no video stream")
        vs = container.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate or 0
        fps = float(rate) if rate else 0.0
        width, height = vs.codec_context.width, vs.codec_context.height
        pix_fmt = vs.codec_context.format.name if vs.codec_context.format else ""
        profile = vs.codec_context.profile or ""
        level = getattr(vs.codec_context, "level", 0) or 0
        vcodec = vs.codec_context.name
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        streams = [vs] if audio_stream is None else [vs, audio_stream]
        frames = 0
        v_end = 0.0
        a_end = 0.0
        a_start: float | None = None
        for packet in container.demux(*streams):
            if packet.pts is None or packet.size == 0:
                continue
            t0 = float(packet.pts * packet.time_base)
            t1 = t0 + float((packet.duration or 0) * packet.time_base)
            if packet.stream.type == "video":
                frames += 1
                v_end = max(v_end, t1)
            else:
                a_start = t0 if a_start is None else min(a_start, t0)
                a_end = max(a_end, t1)
        audio_rate = audio_stream.codec_context.sample_rate if audio_stream else None
        audio_dur = None
        if audio_stream is not None:
            audio_dur = max(0.0, a_end - max(0.0, a_start or 0.0))
    except av.FFmpegError as exc:
        raise MediaError(f"cannot read video {path}: {exc}") from exc
    finally:
        container.close()
    boxes = mp4_top_level_boxes(path)
    faststart = "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat")
    return MediaInfo(
        width=width,
        height=height,
        fps=fps,
        frames=frames,
        duration_s=v_end if v_end else frames / fps if fps else 0.0,
        audio_sample_rate=audio_rate,
        audio_duration_s=audio_dur,
        video_codec=vcodec,
        pix_fmt=pix_fmt,
        profile=str(profile),
        level=level / 10.0 if level > 0 else 0.0,
        audio_codec=audio_stream.codec_context.name if audio_stream else None,
        faststart=faststart,
    )
