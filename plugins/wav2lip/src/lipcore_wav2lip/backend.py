"""The ``onnx`` lipsync back end (variant C): Wav2Lip renders the mouth from the audio.

Build time (``build_assets``): the face crop box from the landmarks, the 96×96 reference crop and
the mouth mask go into the avatar directory (no model needed). Run time (``open_renderer``): a
:class:`Wav2LipRenderer` turns audio into :class:`MouthPatch` es: the mouth ROI of the model's
prediction, in photo pixels, one per video frame, with pts on the utterance's audio timeline.

Configuration (the engine creates back ends without arguments, so the environment counts):

``LIPCORE_WAV2LIP_MODEL``      path of the ONNX model (required to render)
``LIPCORE_WAV2LIP_DEVICE``     auto (default) | cpu | cuda | tensorrt
``LIPCORE_WAV2LIP_PRECISION``  fp32 (default) | fp16
``LIPCORE_WAV2LIP_BATCH``      frames per model run (default 8)
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import cv2
import numpy as np
import numpy.typing as npt
import soxr

from lipcore.errors import LipcoreError
from lipcore.interfaces import AudioMouthRenderer, LipsyncBackend, MouthPatchStream
from lipcore_wav2lip import audio as wa
from lipcore_wav2lip.errors import AvatarAssetError, ModelNotFoundError, SettingsError
from lipcore_wav2lip.face import (
    FACE_SIZE,
    CropBox,
    composite_patch,
    crop_box_from_landmarks,
    crop_box_from_roi,
    crop_face,
    face_input,
    prediction_to_rgb,
    roi_from_prediction,
)
from lipcore_wav2lip.patches import MouthPatch
from lipcore_wav2lip.runtime import Device, Precision, Wav2LipModel

__all__ = ["ASSET_FILE", "PatchStream", "Wav2LipBackend", "Wav2LipRenderer"]

logger = logging.getLogger("lipcore.wav2lip")

ASSET_FILE = "wav2lip.json"
REFERENCE_FILE = "wav2lip_ref.png"
MASK_FILE = "mask_mouth.png"
ASSET_VERSION = 1
Conditioning = Literal["photo", "idle"]
U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "tensorrt")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
MAX_BATCH = 256


def _choice(setting: str, value: str, valid: Sequence[str]) -> str:
    """``value`` (case and spaces ignored) if it is one of ``valid``, else a
    :class:`SettingsError` naming the setting, the value and the valid values."""
    clean = str(value).strip().lower()
    if clean not in valid:
        raise SettingsError(
            f"{setting}={value!r} is not a valid value; use one of: {', '.join(valid)}"
        )
    return clean


def _batch(setting: str, value: object) -> int:
    """A batch size 1…MAX_BATCH from an int or its text, else a :class:`SettingsError`."""
    try:
        n = int(str(value).strip())
    except ValueError:
        n = None
    if n is None or not 1 <= n <= MAX_BATCH:
        raise SettingsError(
            f"{setting}={value!r} is not a valid batch size; use a whole number from 1 to "
            f"{MAX_BATCH} (default 8)"
        )
    return n


def _roi_tuple(roi: Any) -> tuple[int, int, int, int]:
    if isinstance(roi, Mapping):
        return int(roi["x"]), int(roi["y"]), int(roi["w"]), int(roi["h"])
    if hasattr(roi, "x"):
        return int(roi.x), int(roi.y), int(roi.w), int(roi.h)
    x, y, w, h = roi
    return int(x), int(y), int(w), int(h)


def _landmarks_of(mouth_model: Any, photo: U8) -> npt.NDArray[np.float64] | None:
    for owner, attr in (
        (mouth_model, "landmarks"),
        (getattr(mouth_model, "face", None), "landmarks"),
    ):
        value = getattr(owner, attr, None) if owner is not None else None
        if value is not None:
            return np.asarray(value, dtype=np.float64)
    # The mouth model does not carry the landmarks: measure the photo again (same landmarker).
    from lipcore.avatar.face import FaceAnalyzer
    from lipcore.errors import LipcoreError

    try:
        with FaceAnalyzer() as analyzer:
            return np.asarray(analyzer.analyze(photo).landmarks, dtype=np.float64)
    except LipcoreError as exc:
        logger.warning("Wav2Lip face box: landmarks unavailable (%s); estimating from the ROI", exc)
        return None


class PatchStream(MouthPatchStream):
    """Mouth patches for one utterance, produced as its audio arrives.

    ``push(pcm, pts_ms)`` returns the patches whose mel window is complete, that is every frame
    ``i`` with ``int(80 (i - 1) / fps) + 16`` mel columns final (the training alignment, see
    :mod:`lipcore_wav2lip.audio`), which needs the audio up to about ``(i - 1) / fps + 212.5 ms``
    (16 columns of 12.5 ms plus half an STFT window). ``finish()`` returns
    the rest (windows past the end are silence). The patches equal those of
    :meth:`Wav2LipRenderer.render_audio` on the whole audio, however it was chunked.
    """

    def __init__(
        self,
        renderer: Wav2LipRenderer,
        *,
        sample_rate: int,
        idle_start: int = 0,
        pts_origin_ms: float = 0.0,
    ) -> None:
        self.renderer = renderer
        self.sample_rate = sample_rate
        self.idle_start = idle_start
        self.origin_ms = pts_origin_ms
        self._resampler = wa.Resampler(sample_rate)
        self._mel = wa.StreamingMel()
        self._next_frame = 0
        self._received = 0  # input samples
        self.finished = False
        #: (frame, audio received in ms when the frame became computable): the right context
        #: a frame waited for is ``ready_ms - frame pts``.
        self.readiness: list[tuple[int, float]] = []

    @property
    def audio_ms(self) -> float:
        return self._received / self.sample_rate * 1000.0

    def push(self, pcm: Any, pts_ms: float | None = None) -> list[MouthPatch]:
        """Add audio (s16le bytes, int16 or float array at ``sample_rate``). ``pts_ms`` (where it
        starts on the utterance timeline) is checked: a gap is filled with silence, an overlap is
        an error."""
        from lipcore.errors import InputError

        if self.finished:
            raise InputError("this utterance's audio is finished; open a new stream")
        samples = wa.pcm_to_float(pcm)
        if pts_ms is not None:
            expected = self.origin_ms + self.audio_ms
            gap = pts_ms - expected
            if gap < -1.0:
                raise InputError(
                    f"audio chunk at pts {pts_ms:.1f} ms overlaps audio already received (up to "
                    f"{expected:.1f} ms); chunks must be in order without overlap"
                )
            if gap > 1.0:
                silence = np.zeros(round(gap / 1000.0 * self.sample_rate), dtype=np.float32)
                samples = np.concatenate([silence, samples])
        self._received += len(samples)
        self._mel.push(self._resampler.push(samples))
        return self._emit(final=False)

    def finish(self) -> list[MouthPatch]:
        """The remaining patches (the utterance's audio is complete)."""
        if self.finished:
            return []
        tail = self._resampler.push(np.zeros(0, dtype=np.float32), last=True)
        if len(tail):
            self._mel.push(tail)
        self._mel.finish()
        self.finished = True
        return self._emit(final=True)

    def _emit(self, *, final: bool) -> list[MouthPatch]:
        fps = self.renderer.fps
        cols = self._mel.columns
        if final:
            last = wa.frame_count(self._mel.samples, fps)
        else:
            last = self._next_frame
            while wa.window_start(last, fps) + wa.MEL_WINDOW <= cols:
                last += 1
        frames = list(range(self._next_frame, last))
        if not frames:
            return []
        self._next_frame = last
        self.readiness.extend((i, self.audio_ms) for i in frames)
        mel = wa.mel_windows(self._mel.mel, frames, fps)
        return self.renderer._patches(frames, mel, idle_start=self.idle_start)


class Wav2LipRenderer(AudioMouthRenderer):
    """Renders mouth patches from audio for one avatar, and composites them onto idle frames.

    The :class:`lipcore.interfaces.AudioMouthRenderer` of variant C, plus:

    * ``stream(sample_rate=..., idle_start=0)`` → :class:`PatchStream` (``push`` / ``finish``)
    * ``feed_audio(pcm, sample_rate, pts_ms)`` / ``finish_audio()``: the same on a current stream
    * ``render_audio(audio, sample_rate)``: every patch of a whole utterance at once (offline)
    * ``composite(frame, patch, idle_index=...)``: paste one patch onto an idle frame
    * ``render(frame, idle_index=..., weights=...)``: the :class:`MouthRenderer` call; weights are
      ignored (the audio drives the mouth): it composites the next patch produced by
      ``feed_audio``/``finish_audio``/``render_audio`` (in frame order), or returns the frame
      unchanged when none is waiting (silence: the idle loop's own mouth).
    """

    def __init__(
        self,
        model: Wav2LipModel,
        *,
        roi: tuple[int, int, int, int],
        box: CropBox,
        mask: F32,
        reference: U8,
        affines: Sequence[Sequence[float]],
        fps: float,
        conditioning: Conditioning = "photo",
        idle_frames: Any = None,
        queue_limit: int = 750,
    ) -> None:
        if conditioning not in ("photo", "idle"):
            raise ValueError(f"conditioning must be 'photo' or 'idle'; got {conditioning!r}")
        if not affines:
            raise AvatarAssetError("the avatar's mouth track has no frames")
        self.model = model
        self.roi = roi
        self.box = box
        self.mask = mask
        self.reference = reference
        self.affines = [tuple(float(v) for v in a) for a in affines]
        self.fps = float(fps)
        self.conditioning = conditioning
        self._idle_frames = idle_frames
        self._photo_face = face_input(reference, reference)
        self._queue: collections.deque[MouthPatch] = collections.deque(maxlen=queue_limit)
        self._stream: PatchStream | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ audio → patches

    def stream(
        self, *, sample_rate: int, idle_start: int = 0, pts_origin_ms: float = 0.0
    ) -> PatchStream:
        """A fresh stream for one utterance; frame ``i`` is paired with idle frame
        ``(idle_start + i) % len(mouth_track)``."""
        return PatchStream(
            self, sample_rate=sample_rate, idle_start=idle_start, pts_origin_ms=pts_origin_ms
        )

    def feed_audio(
        self, pcm: Any, sample_rate: int, pts_ms: float | None = None, *, idle_start: int = 0
    ) -> list[MouthPatch]:
        """Push audio into the current utterance (started on the first call or after
        :meth:`finish_audio`); returns the patches that became ready (also queued for
        :meth:`render`)."""
        if self._stream is None or self._stream.finished:
            origin = pts_ms if pts_ms is not None else 0.0
            self._stream = self.stream(
                sample_rate=sample_rate, idle_start=idle_start, pts_origin_ms=origin
            )
        elif sample_rate != self._stream.sample_rate:
            from lipcore.errors import InputError

            raise InputError(
                f"sample rate changed within an utterance ({self._stream.sample_rate} → "
                f"{sample_rate} Hz); finish_audio() first"
            )
        patches = self._stream.push(pcm, pts_ms)
        self._queue.extend(patches)
        return patches

    def finish_audio(self) -> list[MouthPatch]:
        """End the current utterance: its remaining patches."""
        if self._stream is None:
            return []
        patches = self._stream.finish()
        self._queue.extend(patches)
        return patches

    def render_audio(
        self, audio: Any, sample_rate: int, *, idle_start: int = 0, queue: bool = False
    ) -> list[MouthPatch]:
        """Every patch of one whole utterance (offline path: one mel, batched model runs);
        ``queue`` also queues them for :meth:`render`."""
        x = wa.pcm_to_float(audio)
        if sample_rate != wa.SAMPLE_RATE:
            x = soxr.resample(x, sample_rate, wa.SAMPLE_RATE, quality="HQ").astype(np.float32)
        mel = wa.mel_spectrogram(x)
        frames = list(range(wa.frame_count(len(x), self.fps)))
        patches = self._patches(
            frames, wa.mel_windows(mel, frames, self.fps), idle_start=idle_start
        )
        if queue:
            self._queue.extend(patches)
        return patches

    def idle_index(self, frame: int, idle_start: int = 0) -> int:
        return (idle_start + frame) % len(self.affines)

    def _face_batch(self, idle_indices: Sequence[int]) -> F32:
        if self.conditioning == "photo":
            return np.broadcast_to(self._photo_face, (len(idle_indices), 6, FACE_SIZE, FACE_SIZE))
        frames = self._idle()
        out = np.empty((len(idle_indices), 6, FACE_SIZE, FACE_SIZE), dtype=np.float32)
        for k, j in enumerate(idle_indices):
            crop = crop_face(frames[j], self.box, affine=self.affines[j])
            out[k] = face_input(crop, crop)
        return out

    def _idle(self) -> Sequence[U8]:
        frames = self._idle_frames() if callable(self._idle_frames) else self._idle_frames
        if frames is None or len(frames) != len(self.affines):
            raise AvatarAssetError(
                "conditioning='idle' needs the avatar's decoded idle frames, one per mouth-track "
                "entry; use conditioning='photo' or rebuild the avatar"
            )
        return frames  # type: ignore[no-any-return]

    def _patches(self, frames: Sequence[int], mel: F32, *, idle_start: int) -> list[MouthPatch]:
        idle = [self.idle_index(i, idle_start) for i in frames]
        faces = self._face_batch(idle)
        with self._lock:  # one model session may serve several renderers' threads
            pred = self.model.infer(mel, faces)
        out = []
        for k, i in enumerate(frames):
            face = prediction_to_rgb(pred[k])
            out.append(
                MouthPatch(
                    frame=i,
                    pts_ms=i * 1000.0 / self.fps,
                    idle_index=idle[k],
                    roi=self.roi,
                    rgb=roi_from_prediction(face, self.box, self.roi),
                )
            )
        return out

    # ------------------------------------------------------------------ compositing

    def composite(self, frame: U8, patch: MouthPatch, *, idle_index: int | None = None) -> U8:
        """``frame`` (an idle-loop frame) with ``patch`` blended in, placed by the mouth track
        of ``idle_index`` (default: the idle frame the patch was rendered for)."""
        j = patch.idle_index if idle_index is None else idle_index
        return composite_patch(
            frame, patch.rgb, self.mask, patch.roi, self.affines[j % len(self.affines)]
        )

    def render(
        self,
        frame: Any,
        *,
        idle_index: int,
        weights: Mapping[str, float] | None = None,
        patch: MouthPatch | None = None,
    ) -> Any:
        """Composite ``patch`` (or the next queued one) onto ``frame``; see the class doc."""
        if patch is None:
            if not self._queue:
                return np.asarray(frame).copy()
            patch = self._queue.popleft()
        return self.composite(np.asarray(frame), patch, idle_index=idle_index)

    def clear(self) -> None:
        """Drop queued patches and the current stream (barge-in)."""
        self._queue.clear()
        self._stream = None


class Wav2LipBackend(LipsyncBackend):
    """Variant C: ``type = "onnx"``, driven by the audio."""

    type: ClassVar[str] = "onnx"
    driven_by: ClassVar[Literal["visemes", "audio"]] = "audio"
    # The server renders the mouth; clients need the mask. The reference face is listed in
    # ``files`` only: it is no model a client would run, so it is not ``model_url``.
    # wav2lip.json stays on the server.
    client_assets: ClassVar[Mapping[str, str]] = {"reference": "", "mask": "mask_url"}

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        device: Device | None = None,
        precision: Precision | None = None,
        batch_size: int | None = None,
        conditioning: Conditioning = "photo",
        threads: int | None = None,
    ) -> None:
        env = os.environ
        self.model_path = (
            Path(model_path)
            if model_path
            else (Path(env["LIPCORE_WAV2LIP_MODEL"]) if env.get("LIPCORE_WAV2LIP_MODEL") else None)
        )
        # Settings are checked here, when the back end is created: a bad value is one clear
        # error naming the valid ones, before any avatar or session depends on it.
        self.device: Device = _choice(  # type: ignore[assignment]
            "device" if device else "LIPCORE_WAV2LIP_DEVICE",
            device or env.get("LIPCORE_WAV2LIP_DEVICE", "auto"), DEVICES)
        self.precision: Precision = _choice(  # type: ignore[assignment]
            "precision" if precision else "LIPCORE_WAV2LIP_PRECISION",
            precision or env.get("LIPCORE_WAV2LIP_PRECISION", "fp32"), PRECISIONS)
        self.batch_size = _batch(
            "batch_size" if batch_size is not None else "LIPCORE_WAV2LIP_BATCH",
            batch_size if batch_size is not None else env.get("LIPCORE_WAV2LIP_BATCH", "8"))
        self.conditioning: Conditioning = conditioning
        self.threads = threads
        self._model: Wav2LipModel | None = None
        self._model_error: LipcoreError | None = None
        self._model_lock = threading.Lock()

    @property
    def configured(self) -> bool:
        """Whether a model is configured (a server should then check it at start)."""
        return self.model_path is not None

    def availability(self) -> str | None:
        """``None`` when a model is configured and loads (signature checked, trial run done);
        else one sentence why not. The model is loaded once; a failure is remembered (fix the
        setting and restart)."""
        if self.model_path is None:
            return (
                "no Wav2Lip model is configured on this server (the operator sets "
                "LIPCORE_WAV2LIP_MODEL to the ONNX export of the Wav2Lip checkpoint)"
            )
        try:
            self.model()
        except LipcoreError as exc:
            return f"the server's Wav2Lip model cannot be used: {exc}"
        return None

    # ------------------------------------------------------------------ build time

    def build_assets(
        self,
        mouth_model: Any,
        out_dir: Any,
        *,
        photo: U8 | None = None,
        landmarks: npt.ArrayLike | None = None,
    ) -> dict[str, Any]:
        """Write ``wav2lip.json`` (crop box, ROI), ``wav2lip_ref.png`` (the 96×96 reference face)
        and ``mask_mouth.png`` (unless the mouth model already wrote it) into ``out_dir``.

        Needs the photo and its landmarks: taken from the arguments, else from the mouth model
        (``photo``/``_photo``, ``landmarks``/``face.landmarks``), else the photo is analysed
        again. The model file is not needed to build an avatar.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if photo is None:
            photo = getattr(mouth_model, "photo", None)
            if photo is None:
                photo = getattr(mouth_model, "_photo", None)
        if photo is None:
            raise AvatarAssetError(
                "the Wav2Lip back end needs the photo to cut the reference face: pass photo= or a "
                "mouth model that carries it"
            )
        photo = np.ascontiguousarray(photo)
        roi = _roi_tuple(mouth_model.roi)
        lms = (
            np.asarray(landmarks, dtype=np.float64)
            if landmarks is not None
            else _landmarks_of(mouth_model, photo)
        )
        height, width = photo.shape[:2]
        box = (
            crop_box_from_landmarks(lms, (width, height), roi=roi)
            if lms is not None
            else crop_box_from_roi(roi, (width, height))
        )
        reference = crop_face(photo, box)
        if not cv2.imwrite(str(out / REFERENCE_FILE), reference[:, :, ::-1]):
            raise OSError(f"could not write {out / REFERENCE_FILE}")
        if not (out / MASK_FILE).is_file():
            mask8 = np.clip(np.asarray(mouth_model.mask) * 255.0 + 0.5, 0, 255).astype(np.uint8)
            if not cv2.imwrite(str(out / MASK_FILE), mask8):
                raise OSError(f"could not write {out / MASK_FILE}")
        info = {
            "version": ASSET_VERSION,
            "crop_box": box.as_list(),
            "roi": dict(zip("xywh", roi, strict=True)),
            "image_size": [width, height],
            "face_size": FACE_SIZE,
            "reference": REFERENCE_FILE,
            "mask": MASK_FILE,
            "audio": {
                "sample_rate": wa.SAMPLE_RATE,
                "mel_fps": wa.MEL_FPS,
                "window": wa.MEL_WINDOW,
                "alignment": "frame i uses mel columns [int(80 (i - 1) / fps), +16) "
                "(Wav2Lip's training alignment)",
            },
        }
        (out / ASSET_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
        return {"wav2lip": ASSET_FILE, "reference": REFERENCE_FILE, "mask": MASK_FILE}

    # ------------------------------------------------------------------ run time

    def model(self) -> Wav2LipModel:
        """The shared ONNX session (loaded on first use)."""
        with self._model_lock:
            if self._model_error is not None:
                raise self._model_error
            if self._model is None:
                if self.model_path is None:
                    raise ModelNotFoundError(
                        "no Wav2Lip model configured: set LIPCORE_WAV2LIP_MODEL to your ONNX "
                        "export of the Wav2Lip checkpoint (see the lipcore-wav2lip README), or "
                        "pass "
                        "model_path= to Wav2LipBackend"
                    )
                try:
                    self._model = Wav2LipModel(
                        self.model_path,
                        device=self.device,
                        precision=self.precision,
                        batch_size=self.batch_size,
                        threads=self.threads,
                    )
                except LipcoreError as exc:
                    self._model_error = exc
                    raise
            return self._model

    def open_renderer(self, avatar: Any) -> Wav2LipRenderer:
        """A renderer for a loaded avatar (``lipcore.avatar.store.Avatar``)."""
        lipsync = dict(getattr(avatar.manifest, "lipsync", {}) or {})
        rel = str(lipsync.get("wav2lip", ASSET_FILE))
        name = getattr(avatar, "id", None) or str(getattr(avatar, "directory", "?"))
        try:
            info = json.loads(Path(avatar.asset(rel)).read_text(encoding="utf-8"))
            box = CropBox(*(float(v) for v in info["crop_box"]))
            roi = _roi_tuple(info["roi"])
            ref_path = Path(avatar.asset(str(info.get("reference", REFERENCE_FILE))))
            mask_path = Path(avatar.asset(str(lipsync.get("mask", info.get("mask", MASK_FILE)))))
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise AvatarAssetError(
                f"avatar {name!r} has no usable Wav2Lip assets ({type(exc).__name__}: {exc}); "
                "rebuild it with backend 'onnx'"
            ) from exc
        reference = cv2.imread(str(ref_path), cv2.IMREAD_COLOR)
        mask8 = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        if reference is None or mask8 is None:
            unreadable = ref_path if reference is None else mask_path
            raise AvatarAssetError(f"avatar {name!r}: cannot read {unreadable}; rebuild the avatar")
        if mask8.shape != (roi[3], roi[2]):
            raise AvatarAssetError(
                f"avatar {name!r}: mask is {mask8.shape[1]}×{mask8.shape[0]}, ROI is "
                f"{roi[2]}×{roi[3]}; rebuild the avatar"
            )
        track = avatar.mouth_track
        return Wav2LipRenderer(
            self.model(),
            roi=roi,
            box=box,
            mask=mask8.astype(np.float32) / 255.0,
            reference=np.ascontiguousarray(reference[:, :, ::-1]),
            affines=track.affines,
            fps=track.fps,
            conditioning=self.conditioning,
            idle_frames=getattr(avatar, "idle_frames", None),
        )
