"""The offline commands as a user runs them: ``lipcore say``, ``lipcore eval sync`` on its output,
``lipcore demo``, and their errors (one line, exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest
from typer.testing import CliRunner

from lipcore.avatar.store import Avatar
from lipcore.cli import app

runner = CliRunner()


def test_say_then_eval_sync(avatars: dict[str, Avatar], tmp_path: Path) -> None:
    video = tmp_path / "talk.mp4"
    result = runner.invoke(
        app,
        ["say", "Mama und Papa bauen am Meer ein Boot.", "--avatar",
         str(avatars["mesh"].directory), "--voice", "de", "--out", str(video)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    timings = video.with_suffix(".timings.json")
    data = json.loads(timings.read_text())
    assert data["backend"] == "mesh" and data["language"].startswith("de")
    assert any(p["phoneme"].startswith("m") for p in data["phonemes"])
    with av.open(str(video)) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.audio[0].codec_context.name == "aac"

    plot = tmp_path / "sync.png"
    result = runner.invoke(app, ["eval", "sync", str(video), "--plot", str(plot), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["closure_rate"] >= 0.9 and -60.0 <= report["offset_ms"] <= 40.0
    assert plot.stat().st_size > 10_000


def test_say_errors_are_one_line(avatars: dict[str, Avatar], tmp_path: Path) -> None:
    d = str(avatars["sprites"].directory)
    cases = [
        (["say", "   ", "--avatar", d, "--out", str(tmp_path / "a.mp4")], "empty"),
        (["say", "Hallo", "--avatar", str(tmp_path), "--out", str(tmp_path / "b.mp4")], "avatar"),
        (["say", "Hallo", "--avatar", d, "--voice", "xx-nope", "--out", str(tmp_path / "c.mp4")],
         "voice"),
        (["say", "Hallo", "--avatar", d, "--out", str(tmp_path / "d.avi")], ".mp4"),
    ]  # fmt: skip
    for args, word in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output and word in result.output.lower(), result.output


@pytest.mark.slow
def test_demo_writes_every_video_and_preview(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for backend in ("sprites", "mesh"):
        assert (out / f"preview-{backend}.png").stat().st_size > 50_000
        for lang in ("de", "en"):
            video = out / f"talk-{backend}-{lang}.mp4"
            with av.open(str(video)) as c:
                assert c.streams.video[0].frames > 50 and c.streams.audio
            assert video.with_suffix(".timings.json").is_file()


def test_say_with_a_tts_that_returns_no_audio_is_an_error(
    avatars: dict[str, Avatar], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A speech source that yields no audio is an error naming the speech source, not a
    silent video reported as a success (issue 18 item 15)."""
    import lipcore.engine
    from lipcore.testing import ReplayTTSSource, testing_engine

    engine = testing_engine(tts={"mute": ReplayTTSSource([])}, default_tts="mute")
    monkeypatch.setattr(lipcore.engine, "Engine", lambda *a, **k: engine)
    video = tmp_path / "talk.mp4"
    result = runner.invoke(app, ["say", "Hello there.", "--avatar",
                                 str(avatars["sprites"].directory), "--tts", "mute",
                                 "--voice", "test", "--out", str(video)])
    assert result.exit_code == 2, result.output
    out = " ".join(result.output.split()).lower()
    assert "speech source" in out and "returned no audio" in out and "mute" in out, out
    assert "Traceback" not in result.output
    assert not video.exists()


def test_error_text_is_not_read_as_console_markup(tmp_path: Path) -> None:
    """An error's [brackets] print as written (issue 18 item 10): the fp16 install hint."""
    import typer

    from lipcore.cli._common import user_errors
    from lipcore.errors import LipcoreError

    mini = typer.Typer()

    @mini.command()
    @user_errors
    def fail() -> None:
        raise LipcoreError("FP16 needs onnx; pip install 'lipcore-wav2lip[fp16]' [bold]x[/]")

    result = runner.invoke(mini, [])
    assert result.exit_code == 2
    assert "pip install 'lipcore-wav2lip[fp16]'" in result.output, result.output
    assert "[bold]x[/]" in result.output, result.output
