"""The Wav2Lip model on ONNX Runtime: execution-provider choice, signature check, batched runs.

Provider choice (``device``):

* ``"auto"`` (default): CUDA when the installed onnxruntime offers ``CUDAExecutionProvider``
  *and* a CUDA device really answers (the driver is loaded quietly with ctypes and asked for its
  device count; ``onnxruntime.get_device()`` only says how the wheel was built), else CPU.
* ``"cuda"`` / ``"tensorrt"``: that provider or a :class:`RuntimeUnavailableError`; CPU stays as
  the fallback for operators the GPU provider lacks.
* ``"cpu"``.

ONNX Runtime's own log level is raised to *fatal*: a machine without CUDA does not print a wall
of provider-loading warnings, and a failed run does not print the runtime's own log line in the
user's terminal; every runtime failure is raised as a lipcore error instead (ModelFormatError,
ModelSignatureError, ModelRunError).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lipcore_wav2lip.errors import (
    ModelFormatError,
    ModelNotFoundError,
    ModelRunError,
    ModelSignatureError,
    RuntimeUnavailableError,
    SettingsError,
)

__all__ = [
    "Device",
    "ModelSignature",
    "Precision",
    "Wav2LipModel",
    "convert_to_fp16",
    "cuda_device_count",
    "select_providers",
]

logger = logging.getLogger("lipcore.wav2lip")

Device = Literal["auto", "cpu", "cuda", "tensorrt"]
Precision = Literal["fp32", "fp16"]

MEL_SHAPE = (1, 80, 16)
FACE_SHAPE = (6, 96, 96)
OUT_SHAPE = (3, 96, 96)
_FLOAT_TYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
}
# ONNX Runtime severities: 0 verbose … 3 error, 4 fatal. Errors reach the user as exceptions.
_ORT_LOG_QUIET = 4


def cuda_device_count() -> int:
    """CUDA devices the driver reports, 0 when there is no usable driver/device. Never raises
    and prints nothing."""
    names = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            if lib.cuInit(0) != 0:
                return 0
            count = ctypes.c_int(0)
            if lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
                return 0
            return int(count.value)
        except (AttributeError, OSError):
            return 0
    return 0


def _ort() -> Any:
    import onnxruntime as ort

    ort.set_default_logger_severity(_ORT_LOG_QUIET)
    return ort


def select_providers(device: Device = "auto") -> list[str]:
    """The execution providers to ask ONNX Runtime for, best first (always ending with CPU)."""
    ort = _ort()
    available = set(ort.get_available_providers())
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device not in ("auto", "cuda", "tensorrt"):
        raise SettingsError(f"device must be auto, cpu, cuda or tensorrt; got {device!r}")
    wanted = "TensorrtExecutionProvider" if device == "tensorrt" else "CUDAExecutionProvider"
    gpus = cuda_device_count() if wanted in available else 0
    if wanted in available and gpus > 0:
        chain = [wanted]
        if wanted == "TensorrtExecutionProvider" and "CUDAExecutionProvider" in available:
            chain.append("CUDAExecutionProvider")
        return [*chain, "CPUExecutionProvider"]
    if device == "auto":
        return ["CPUExecutionProvider"]
    reason = (
        f"the installed onnxruntime has no {wanted} (providers: {', '.join(sorted(available))}); "
        "install onnxruntime-gpu instead of onnxruntime"
        if wanted not in available
        else "no CUDA device answers (driver missing or no GPU visible)"
    )
    raise RuntimeUnavailableError(
        f"device {device!r} was asked for, but {reason}. Use device='auto' or 'cpu' to run on "
        "the CPU."
    )


@dataclass(frozen=True)
class ModelSignature:
    """Which model input is which, as found in the file."""

    mel_input: str
    face_input: str
    output: str
    dtype: type[np.floating[Any]]
    batch: int | None  # fixed batch size of the file, or None when dynamic


def _dims(shape: Sequence[Any]) -> list[int | None]:
    return [d if isinstance(d, int) and d > 0 else None for d in shape]


def _fits(shape: Sequence[Any], expected: tuple[int, ...]) -> bool:
    dims = _dims(shape)
    if len(dims) != 1 + len(expected):
        return False
    return all(d is None or d == e for d, e in zip(dims[1:], expected, strict=True))


def _describe(args: Sequence[Any]) -> str:
    return ", ".join(f"{a.name} {list(a.shape)} {a.type}" for a in args) or "none"


def _signature(session: Any, path: Path) -> ModelSignature:
    inputs = session.get_inputs()
    outputs = session.get_outputs()
    expected = (
        "inputs mel (B, 1, 80, 16) and face (B, 6, 96, 96), output (B, 3, 96, 96), all float32 "
        "(or all float16)"
    )
    found = f"inputs {_describe(inputs)}; outputs {_describe(outputs)}"

    def fail(what: str) -> ModelSignatureError:
        return ModelSignatureError(
            f"{path} is not a Wav2Lip model: {what}. Expected {expected}; found {found}. Export "
            "the official 96×96 Wav2Lip checkpoint as described in the lipcore-wav2lip README."
        )

    if len(inputs) != 2:
        raise fail(f"it has {len(inputs)} inputs instead of 2")
    if len(outputs) < 1:
        raise fail("it has no output")
    mel = [a for a in inputs if _fits(a.shape, MEL_SHAPE)]
    face = [a for a in inputs if _fits(a.shape, FACE_SHAPE)]
    out = outputs[0]
    if len(mel) == 1 and len(face) == 1 and mel[0] is not face[0]:
        mel_arg, face_arg = mel[0], face[0]
    else:
        # Shapes do not tell (symbolic dimensions): the names may ("mel", "audio", "face"),
        # else a trial run does. Guessing by input order is how a face-first export
        # (input_0 = face) loaded and then failed on its first frame.
        named = [a for a in inputs if any(k in a.name.lower() for k in ("mel", "audio"))]
        faces = [a for a in inputs if any(k in a.name.lower() for k in ("face", "image", "img"))]
        if len(named) == 1:
            mel_arg = named[0]
            face_arg = next(a for a in inputs if a is not mel_arg)
        elif len(faces) == 1:
            face_arg = faces[0]
            mel_arg = next(a for a in inputs if a is not face_arg)
        else:
            mel_arg, face_arg = _by_trial(session, inputs, out, fail)
        for arg, shape, label in ((mel_arg, MEL_SHAPE, "mel"), (face_arg, FACE_SHAPE, "face")):
            if not _fits(arg.shape, shape):
                raise fail(f"no input has the {label} shape (B, {', '.join(map(str, shape))})")
    if not _fits(out.shape, OUT_SHAPE):
        raise fail(f"output {out.name!r} has shape {list(out.shape)}, not (B, 3, 96, 96)")
    types = {mel_arg.type, face_arg.type, out.type}
    if len(types) != 1 or mel_arg.type not in _FLOAT_TYPES:
        raise fail(f"the tensors are {sorted(types)}, not all float32 or all float16")
    batches = {_dims(a.shape)[0] for a in (mel_arg, face_arg, out)}
    batch = batches.pop() if len(batches) == 1 else None
    return ModelSignature(
        mel_input=mel_arg.name,
        face_input=face_arg.name,
        output=out.name,
        dtype=_FLOAT_TYPES[mel_arg.type],
        batch=batch,
    )


def _by_trial(
    session: Any, inputs: Sequence[Any], out: Any, fail: Any
) -> tuple[Any, Any]:
    """Which of two inputs is the mel and which the face, found by running the model once each
    way on zeros (batch 1, or the file's fixed batch): exactly one way must run and give a
    (B, 3, 96, 96) output; otherwise the model is refused with ``fail(...)``."""
    working = []
    for mel_arg, face_arg in ((inputs[0], inputs[1]), (inputs[1], inputs[0])):
        batch = _dims(mel_arg.shape)[0] if _dims(mel_arg.shape) else None
        rows = batch or 1
        mel_t = _FLOAT_TYPES.get(mel_arg.type, np.float32)
        face_t = _FLOAT_TYPES.get(face_arg.type, np.float32)
        feeds = {
            mel_arg.name: np.zeros((rows, *MEL_SHAPE), dtype=mel_t),
            face_arg.name: np.zeros((rows, *FACE_SHAPE), dtype=face_t),
        }
        try:
            result = session.run([out.name], feeds)[0]
        except Exception:  # the wrong way round fails inside the runtime: that is the test
            continue
        if tuple(np.shape(result))[1:] == OUT_SHAPE:
            working.append((mel_arg, face_arg))
    if len(working) != 1:
        how = "fails both ways" if not working else "works both ways"
        raise fail(
            "its inputs have symbolic shapes and names that do not say which is the mel and "
            f"which the face, and a trial run with a (1, 1, 80, 16) mel and a (1, 6, 96, 96) "
            f"face {how}"
        )
    mel_arg, face_arg = working[0]
    logger.info("Wav2Lip model inputs found by a trial run: mel %r, face %r", mel_arg.name,
                face_arg.name)
    return mel_arg, face_arg


def _short(exc: BaseException) -> str:
    """The first line of a runtime error, without ONNX Runtime's bracketed prefix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.replace("[ONNXRuntimeError] : ", "")
    return text[:240]


def convert_to_fp16(model: bytes | str | Path, out_path: str | Path | None = None) -> bytes:
    """An FP16 copy of an FP32 Wav2Lip model (weights and arithmetic in float16, inputs and output
    kept float32). Needs the ``onnx`` package (``pip install lipcore-wav2lip[fp16]``).

    Worth it on GPUs (tensor cores, half the memory traffic); CPUs mostly lack float16 kernels, so
    ONNX Runtime falls back to casts there and it is slower.
    """
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeUnavailableError(
            f"FP16 conversion needs the onnx package ({exc}); pip install 'lipcore-wav2lip[fp16]'"
        ) from exc
    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    converted = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=True)
    data: bytes = converted.SerializeToString()
    if out_path is not None:
        Path(out_path).write_bytes(data)
    return data


class Wav2LipModel:
    """A loaded, validated Wav2Lip ONNX model.

    ``infer(mel, face)`` takes ``(B, 1, 80, 16)`` and ``(B, 6, 96, 96)`` float32 arrays and
    returns ``(B, 3, 96, 96)`` float32 in [0, 1]. Large batches are split into ``batch_size``
    runs; a file exported with a fixed batch dimension gets exactly that many rows per run.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: Device = "auto",
        precision: Precision = "fp32",
        batch_size: int = 16,
        threads: int | None = None,
        io_binding: bool = True,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelNotFoundError(
                f"Wav2Lip model file {self.path} does not exist. Pass the path of your ONNX export "
                "of the Wav2Lip checkpoint (see the lipcore-wav2lip README: how to export it)."
            )
        if batch_size < 1:
            raise SettingsError(f"batch_size must be ≥ 1; got {batch_size}")
        data = self.path.read_bytes()
        if not data:
            raise ModelFormatError(f"Wav2Lip model file {self.path} is empty")
        ort = _ort()
        self.providers_requested = select_providers(device)
        options = ort.SessionOptions()
        options.log_severity_level = _ORT_LOG_QUIET
        if threads:
            options.intra_op_num_threads = threads
        try:
            probe = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelFormatError(
                f"{self.path} is not a readable ONNX model ({type(exc).__name__}: "
                f"{str(exc).strip()[:300]}). Check that the file is complete and is an ONNX export "
                "(not the PyTorch .pth checkpoint itself)."
            ) from exc
        self.signature = _signature(probe, self.path)
        if precision not in ("fp32", "fp16"):
            raise SettingsError(f"precision must be fp32 or fp16; got {precision!r}")
        session = probe if self.providers_requested == ["CPUExecutionProvider"] else None
        if precision == "fp16" and self.signature.dtype == np.float32:
            data = convert_to_fp16(data)
            session = None
        if session is None:
            session = ort.InferenceSession(data, options, providers=self.providers_requested)
            self.signature = _signature(session, self.path)
        self.session = session
        # A float16 model file runs in fp16 whatever was asked.
        self.precision: Precision = (
            "fp16" if precision == "fp16" or self.signature.dtype == np.float16 else "fp32"
        )
        self.providers: list[str] = list(self.session.get_providers())
        self.batch_size = self.signature.batch or batch_size
        self.io_binding = io_binding
        self._device_type = "cuda" if self.providers[0] != "CPUExecutionProvider" else "cpu"
        self._binding = self.session.io_binding() if io_binding else None
        logger.info(
            "Wav2Lip model %s on %s (%s, batch %d)",
            self.path.name,
            ", ".join(self.providers),
            self.precision,
            self.batch_size,
        )

    def _run(self, mel: npt.NDArray[Any], face: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        sig = self.signature
        # An FP16 file converted with keep_io_types has float32 I/O; a native one wants float16.
        mel = np.ascontiguousarray(mel, dtype=sig.dtype)
        face = np.ascontiguousarray(face, dtype=sig.dtype)
        try:
            return self._run_raw(mel, face)
        except Exception as exc:
            raise ModelRunError(
                f"the Wav2Lip model {self.path.name} failed on a batch of {len(mel)} frames "
                f"({_short(exc)}). The model loaded but does not run like Wav2Lip: export the "
                "official 96×96 checkpoint as described in the lipcore-wav2lip README"
            ) from exc

    def _run_raw(
        self, mel: npt.NDArray[Any], face: npt.NDArray[Any]
    ) -> npt.NDArray[np.float32]:
        sig = self.signature
        if self._binding is not None:
            b = self._binding
            b.bind_cpu_input(sig.mel_input, mel)
            b.bind_cpu_input(sig.face_input, face)
            b.bind_output(sig.output, self._device_type)
            self.session.run_with_iobinding(b)
            out = b.copy_outputs_to_cpu()[0]
            b.clear_binding_inputs()
            b.clear_binding_outputs()
        else:
            out = self.session.run([sig.output], {sig.mel_input: mel, sig.face_input: face})[0]
        return np.asarray(out, dtype=np.float32)

    def infer(self, mel: npt.NDArray[Any], face: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Run the model on a batch (split into runs of ``batch_size``)."""
        mel = np.asarray(mel)
        face = np.asarray(face)
        if mel.ndim != 4 or mel.shape[1:] != MEL_SHAPE:
            raise ValueError(f"mel must be (B, 1, 80, 16); got {mel.shape}")
        if face.ndim != 4 or face.shape[1:] != FACE_SHAPE:
            raise ValueError(f"face must be (B, 6, 96, 96); got {face.shape}")
        if len(mel) != len(face):
            raise ValueError(f"mel and face batch sizes differ: {len(mel)} vs {len(face)}")
        n = len(mel)
        out = np.empty((n, *OUT_SHAPE), dtype=np.float32)
        step = self.batch_size
        for start in range(0, n, step):
            m = mel[start : start + step]
            f = face[start : start + step]
            rows = len(m)
            if self.signature.batch is not None and rows < step:
                # A fixed-batch export needs full batches: repeat the last row.
                pad = step - rows
                m = np.concatenate([m, np.repeat(m[-1:], pad, axis=0)])
                f = np.concatenate([f, np.repeat(f[-1:], pad, axis=0)])
            out[start : start + rows] = self._run(m, f)[:rows]
        return out
