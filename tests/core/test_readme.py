"""The README's Python examples run as written (each in a fresh interpreter)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_readme_has_python_examples() -> None:
    assert len(BLOCKS) >= 2, "README lost its embedding examples"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path: Path) -> None:
    # Not as __main__: an example's `if __name__ == "__main__":` part starts a server forever.
    runner = (
        "import sys, runpy; sys.argv = ['example']; "
        "runpy.run_path(sys.argv_path, run_name='readme_example')"
    ).replace("sys.argv_path", repr(str(tmp_path / "example.py")))
    (tmp_path / "example.py").write_text(BLOCKS[index], encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-c", runner],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Every example prints what it shows; an example that prints nothing shows nothing.
    assert proc.stdout.strip(), "the example printed nothing"
