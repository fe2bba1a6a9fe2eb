"""What a new user of the Wav2Lip back end hit first (issue 18): a face-first model with symbolic
dimensions, bad settings, runtime failures, the runtime's own log lines, and availability."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lipcore_wav2lip.backend import Wav2LipBackend
from lipcore_wav2lip.errors import ModelRunError, ModelSignatureError, SettingsError
from lipcore_wav2lip.runtime import Wav2LipModel
from lipcore_wav2lip.testing import tiny_model

from lipcore.errors import InputError, LipcoreError


def _inputs(n: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mel = rng.normal(0, 1, (n, 1, 80, 16)).astype(np.float32)
    face = rng.uniform(0, 1, (n, 6, 96, 96)).astype(np.float32)
    return mel, face


def test_face_first_symbolic_model_is_identified_by_a_trial_run(tmp_path: Path) -> None:
    """input_0 = face, input_1 = mel, every dimension symbolic: the trial run at load finds
    which is which, and the model renders exactly like the same weights with plain names."""
    odd = tmp_path / "odd.onnx"
    tiny_model(odd, mel_name="input_1", face_name="input_0", face_first=True, symbolic=True)
    plain = tmp_path / "plain.onnx"
    tiny_model(plain)
    model = Wav2LipModel(odd, device="cpu")
    assert model.signature.mel_input == "input_1" and model.signature.face_input == "input_0"
    mel, face = _inputs()
    out = model.infer(mel, face)
    ref = Wav2LipModel(plain, device="cpu").infer(mel, face)
    assert out.shape == (2, 3, 96, 96)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_a_model_that_runs_neither_way_is_refused_at_load(tmp_path: Path) -> None:
    """Symbolic dims, meaningless names, and neither assignment runs: refused at load with the
    signature error, not at the first frame."""
    bad = tmp_path / "bad.onnx"
    # Five face channels: a (1, 6, 96, 96) face fits neither way round.
    tiny_model(bad, mel_name="input_1", face_name="input_0", face_first=True, symbolic=True,
               face_channels=5)
    with pytest.raises(ModelSignatureError, match="trial run") as info:
        Wav2LipModel(bad, device="cpu")
    assert isinstance(info.value, InputError)


def test_runtime_failures_are_wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.onnx"
    tiny_model(path)
    model = Wav2LipModel(path, device="cpu", io_binding=False)

    def broken(*args: object, **kwargs: object) -> object:
        import onnxruntime

        raise onnxruntime.capi.onnxruntime_pybind11_state.Fail("[ONNXRuntimeError] : 1 : FAIL : "
                                                               "Non-zero status code")

    monkeypatch.setattr(model.session, "run", broken)
    with pytest.raises(ModelRunError, match="failed on a batch") as info:
        model.infer(*_inputs())
    assert isinstance(info.value, LipcoreError) and info.value.http_status == 500
    assert "[ONNXRuntimeError]" not in str(info.value)


def test_runtime_log_lines_stay_out_of_the_terminal(tmp_path: Path) -> None:
    """Loading a face-first model (whose wrong-way trial run fails inside the runtime) prints
    nothing: no onnxruntime log line on stderr."""
    path = tmp_path / "odd.onnx"
    tiny_model(path, mel_name="input_1", face_name="input_0", face_first=True, symbolic=True)
    code = (
        "import numpy as np\n"
        "from lipcore_wav2lip.runtime import Wav2LipModel\n"
        f"m = Wav2LipModel({str(path)!r}, device='cpu')\n"
        "m.infer(np.zeros((1, 1, 80, 16), np.float32), np.zeros((1, 6, 96, 96), np.float32))\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
    assert "onnxruntime" not in proc.stderr and "[E:" not in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("var", "value", "valid"),
    [
        ("LIPCORE_WAV2LIP_DEVICE", "gpu", "auto, cpu, cuda, tensorrt"),
        ("LIPCORE_WAV2LIP_PRECISION", "half", "fp32, fp16"),
        ("LIPCORE_WAV2LIP_BATCH", "abc", "from 1 to"),
        ("LIPCORE_WAV2LIP_BATCH", "0", "from 1 to"),
    ],
)
def test_bad_settings_are_clear_errors(monkeypatch: pytest.MonkeyPatch, var: str, value: str,
                                       valid: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError) as info:
        Wav2LipBackend()
    message = str(info.value)
    assert var in message and repr(value) in message and valid in message, message
    assert isinstance(info.value, InputError)


def test_settings_are_taken_case_insensitively(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIPCORE_WAV2LIP_DEVICE", " CPU ")
    monkeypatch.setenv("LIPCORE_WAV2LIP_BATCH", "4")
    b = Wav2LipBackend()
    assert b.device == "cpu" and b.batch_size == 4


def test_availability(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                      tiny_model_path: Path) -> None:
    monkeypatch.delenv("LIPCORE_WAV2LIP_MODEL", raising=False)
    reason = Wav2LipBackend().availability()
    assert reason is not None and "LIPCORE_WAV2LIP_MODEL" in reason
    assert not Wav2LipBackend().configured
    assert Wav2LipBackend(tiny_model_path, device="cpu").availability() is None
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    backend = Wav2LipBackend(junk, device="cpu")
    reason = backend.availability()
    assert reason is not None and "cannot be used" in reason and "junk.onnx" in reason
    assert backend.configured


@pytest.mark.parametrize(
    ("env", "word"),
    [
        ({"LIPCORE_WAV2LIP_MODEL": "JUNK"}, "cannot run"),
        ({"LIPCORE_WAV2LIP_BATCH": "abc"}, "LIPCORE_WAV2LIP_BATCH"),
    ],
)
def test_serve_checks_the_configured_model_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], word: str
) -> None:
    """``lipcore serve`` with a configured but unusable model (or bad settings) stops at start
    with the reason, before it listens (issue 18 item 11)."""
    from typer.testing import CliRunner

    from lipcore.cli import app

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    for k, v in env.items():
        monkeypatch.setenv(k, str(junk) if v == "JUNK" else v)
    result = CliRunner().invoke(app, ["serve", "--port", "1", "--data-dir", str(tmp_path)])
    out = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert word in out and "Traceback" not in out, out
