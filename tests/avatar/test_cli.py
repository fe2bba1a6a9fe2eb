"""``lipcore avatarize``: real runs through the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from lipcore.avatar.store import load_avatar
from lipcore.cli import app

runner = CliRunner()


def _text(result: Any) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def _sprites_installed() -> bool:
    from lipcore.plugins import PluginRegistry, get_plugin_manager

    return "sprites" in PluginRegistry(get_plugin_manager()).names("lipsync_backends")


@pytest.mark.skipif(not _sprites_installed(), reason="lipcore-sprites is not installed")
def test_avatarize_grace_hopper(grace_hopper_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "grace"
    result = runner.invoke(
        app,
        ["avatarize", str(grace_hopper_path), "--out", str(out), "--seconds", "3", "--fps", "20"],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(out)  # the directory, for scripts
    assert "preview" in _text(result) and "idle loop" in _text(result)
    avatar = load_avatar(out)
    assert avatar.lipsync_type == "sprites" and avatar.manifest.idle.frames == 60
    assert avatar.asset(avatar.extra["preview"]).is_file()
    # Listed by the photo's file name, with a square face thumbnail written at build.
    assert avatar.extra["name"] == grace_hopper_path.stem
    from PIL import Image

    with Image.open(avatar.asset(avatar.extra["thumbnail"])) as thumb:
        assert thumb.size == (160, 160) and thumb.format == "JPEG"


def test_avatarize_refuses_a_landscape(tmp_path: Path) -> None:
    from skimage import data

    photo = tmp_path / "coffee.png"
    Image.fromarray(np.asarray(data.coffee())).save(photo)
    result = runner.invoke(app, ["avatarize", str(photo), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "no face found" in _text(result) and "coffee.png" in _text(result)
    assert "Traceback" not in result.output
    assert not (tmp_path / "x").exists()


def test_avatarize_refuse_multiple(two_faces_rgb: np.ndarray, tmp_path: Path) -> None:
    photo = tmp_path / "two.png"
    Image.fromarray(two_faces_rgb).save(photo)
    args = ["avatarize", str(photo), "--out", str(tmp_path / "x"), "--refuse-multiple"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "2 faces" in _text(result)


def test_avatarize_unknown_backend(grace_hopper_path: Path, tmp_path: Path) -> None:
    args = ["avatarize", str(grace_hopper_path), "--out", str(tmp_path / "x"), "-b", "nope"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    text = _text(result)
    assert "'nope'" in text and "Installed lipsync back ends:" in text and "sprites" in text
    assert list(tmp_path.iterdir()) == []


def test_avatarize_corrupt_file_and_bad_options(tmp_path: Path) -> None:
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    result = runner.invoke(app, ["avatarize", str(bad), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "not a readable image" in _text(result)
    result = runner.invoke(app, ["avatarize", str(bad), "--out", "x", "--seconds", "30"])
    assert result.exit_code == 2 and "seconds" in result.output
