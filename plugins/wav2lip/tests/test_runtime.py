"""Loading and running a Wav2Lip ONNX model: providers, signature check, batching, FP16, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lipcore_wav2lip.errors import (
    ModelFormatError,
    ModelNotFoundError,
    ModelSignatureError,
    RuntimeUnavailableError,
)
from lipcore_wav2lip.runtime import Wav2LipModel, cuda_device_count, select_providers
from lipcore_wav2lip.testing import tiny_model

from lipcore.errors import InputError, LipcoreError


def inputs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mel = rng.uniform(-4, 4, (n, 1, 80, 16)).astype(np.float32)
    face = rng.uniform(0, 1, (n, 6, 96, 96)).astype(np.float32)
    return mel, face


def test_cpu_machine_picks_cpu_quietly(
    tiny_model_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    assert cuda_device_count() == 0  # this CI machine has no GPU
    assert select_providers("auto") == ["CPUExecutionProvider"]
    model = Wav2LipModel(tiny_model_path)
    assert model.providers == ["CPUExecutionProvider"]
    model.infer(*inputs(1))
    out, err = capfd.readouterr()
    assert "cuda" not in (out + err).lower()  # no provider-loading noise on a CPU machine


def test_asking_for_cuda_without_one_says_so(tiny_model_path: Path) -> None:
    with pytest.raises(RuntimeUnavailableError, match=r"onnxruntime-gpu|CUDA device"):
        Wav2LipModel(tiny_model_path, device="cuda")
    with pytest.raises(RuntimeUnavailableError, match="device='auto'"):
        select_providers("tensorrt")


def test_output_depends_on_face_and_audio(tiny_model_path: Path) -> None:
    model = Wav2LipModel(tiny_model_path)
    mel, face = inputs(2)
    out = model.infer(mel, face)
    assert out.shape == (2, 3, 96, 96) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    other_audio = model.infer(mel[::-1].copy(), face)
    assert np.abs(other_audio - out).max() > 0.05
    other_face = model.infer(mel, face[::-1].copy())
    assert np.abs(other_face - out).max() > 0.05


@pytest.mark.parametrize("io_binding", [True, False])
def test_batched_equals_single(tiny_model_path: Path, io_binding: bool) -> None:
    model = Wav2LipModel(tiny_model_path, batch_size=4, io_binding=io_binding)
    mel, face = inputs(11, seed=1)
    batched = model.infer(mel, face)  # runs of 4, 4, 3
    single = np.concatenate([model.infer(mel[i : i + 1], face[i : i + 1]) for i in range(11)])
    np.testing.assert_allclose(batched, single, atol=1e-6)


def test_fixed_batch_export_gets_full_batches(tmp_path: Path) -> None:
    path = tmp_path / "b4.onnx"
    tiny_model(path, batch=4)
    model = Wav2LipModel(path, batch_size=16)
    assert model.batch_size == 4  # the file's fixed batch wins
    mel, face = inputs(9, seed=2)
    ref = Wav2LipModel(path).infer(mel[:4], face[:4])
    out = model.infer(mel, face)
    assert out.shape == (9, 3, 96, 96)
    np.testing.assert_allclose(out[:4], ref, atol=1e-6)


def test_input_order_and_names_are_flexible(tmp_path: Path) -> None:
    path = tmp_path / "named.onnx"
    tiny_model(path, mel_name="audio_sequences", face_name="face_sequences", out_name="y")
    model = Wav2LipModel(path)
    assert (model.signature.mel_input, model.signature.face_input) == (
        "audio_sequences",
        "face_sequences",
    )
    ref = Wav2LipModel(path).infer(*inputs(2))
    np.testing.assert_allclose(model.infer(*inputs(2)), ref)


def test_fp16_option(tiny_model_path: Path, tmp_path: Path) -> None:
    mel, face = inputs(3, seed=3)
    ref = Wav2LipModel(tiny_model_path).infer(mel, face)
    half = Wav2LipModel(tiny_model_path, precision="fp16")
    assert half.precision == "fp16"
    np.testing.assert_allclose(half.infer(mel, face), ref, atol=3e-3)
    # A model exported in float16 (fp16 inputs and output) is taken as it is.
    native = tmp_path / "native16.onnx"
    tiny_model(native, float16=True)
    model = Wav2LipModel(native)
    assert model.precision == "fp16" and model.signature.dtype == np.float16
    np.testing.assert_allclose(model.infer(mel, face), ref, atol=3e-3)


# ------------------------------------------------------------------------------- bad models


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist") as info:
        Wav2LipModel(tmp_path / "nope.onnx")
    assert isinstance(info.value, LipcoreError) and "nope.onnx" in str(info.value)


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not a model\n" * 10, b"PK\x03\x04" + bytes(range(256)) * 40],
    ids=["empty", "text", "zip-like checkpoint"],
)
def test_not_onnx(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError, match=r"bad\.onnx") as info:
        Wav2LipModel(path)
    assert isinstance(info.value, InputError)


def test_truncated_model(tiny_model_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "cut.onnx"
    path.write_bytes(tiny_model_path.read_bytes()[:3000])
    with pytest.raises(ModelFormatError, match="not a readable ONNX model"):
        Wav2LipModel(path)


@pytest.mark.parametrize(
    ("kwargs", "found"),
    [
        ({"face_channels": 3}, "face"),
        ({"mel_bins": 40}, "mel"),
        ({"out_size": 48}, "output"),
    ],
    ids=["3-channel face", "40 mel bins", "48px output"],
)
def test_wrong_signature_names_found_and_expected(
    tmp_path: Path, kwargs: dict[str, int], found: str
) -> None:
    path = tmp_path / "wrong.onnx"
    tiny_model(path, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ModelSignatureError) as info:
        Wav2LipModel(path)
    msg = str(info.value)
    assert "not a Wav2Lip model" in msg and found in msg
    assert "Expected inputs mel (B, 1, 80, 16) and face (B, 6, 96, 96)" in msg
    assert "found inputs" in msg  # what the file has, by name and shape


def test_wrong_inference_shapes_are_caught(tiny_model_path: Path) -> None:
    model = Wav2LipModel(tiny_model_path)
    mel, face = inputs(2)
    with pytest.raises(ValueError, match="batch sizes differ"):
        model.infer(mel[:1], face)
    with pytest.raises(ValueError, match=r"face must be \(B, 6, 96, 96\)"):
        model.infer(mel, face[:, :3])
