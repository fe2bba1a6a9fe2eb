"""The web client's protocol module (``src/lipcore/web/protocol.js``) under node's test runner:
the shared vectors, interpolation on the audio clock, the barge-in ramp, clock sync."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def test_protocol_module_under_node() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the browser tests still cover the page)")
    proc = subprocess.run(
        [node, "--test", str(HERE / "js")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "# fail 0" in proc.stdout
