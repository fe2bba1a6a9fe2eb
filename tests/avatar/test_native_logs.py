"""MediaPipe's native start-up chatter stays off the terminal; real stderr output does not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import os, sys
from lipcore.avatar.face import FaceAnalyzer, _quiet_native_stderr
from lipcore.avatar.image import load_photo
with FaceAnalyzer(sys.argv[1]) as fa:
    print(len(fa.detect(load_photo(sys.argv[2]))), "face")
with _quiet_native_stderr():
    os.write(2, b"INFO: chatter that is held back\\n")
    os.write(2, b"a real problem someone must see\\n")
"""


def _run(
    face_model_path: Path, grace_hopper_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(face_model_path), str(grace_hopper_path)],
        capture_output=True, text=True, timeout=120, env={**os.environ, **env},
    )  # fmt: skip


def test_face_analysis_prints_no_native_chatter(
    face_model_path: Path, grace_hopper_path: Path
) -> None:
    proc = _run(face_model_path, grace_hopper_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1 face"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == ["a real problem someone must see"], proc.stderr


def test_native_logs_switch_shows_everything(
    face_model_path: Path, grace_hopper_path: Path
) -> None:
    proc = _run(face_model_path, grace_hopper_path, LIPCORE_NATIVE_LOGS="1")
    assert proc.returncode == 0, proc.stderr
    assert "INFO: chatter that is held back" in proc.stderr
