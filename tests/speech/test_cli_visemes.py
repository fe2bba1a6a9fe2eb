"""``lipcore visemes`` and ``lipcore voices`` through Typer's test runner."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from lipcore.cli import app
from lipcore.speech.visemes import VISEME_CLASSES

runner = CliRunner()


def test_visemes_json_prints_the_contract_events() -> None:
    result = runner.invoke(
        app, ["visemes", "Hallo, wie geht es dir?", "--lang", "de", "--fps", "60", "--json"]
    )
    assert result.exit_code == 0, result.output
    events = json.loads(result.stdout)
    assert len(events) > 60  # > 1 s at 60 fps
    pts = [e["pts_ms"] for e in events]
    assert all(b > a for a, b in itertools.pairwise(pts))
    for e in events:
        assert e["type"] == "viseme"
        assert set(e["weights"]) <= set(VISEME_CLASSES)
        assert sum(e["weights"].values()) <= 1.0 + 1e-3
    assert events[-1]["weights"] == {}
    assert any(max(e["weights"], key=e["weights"].get, default="") == "AI" for e in events)


def test_visemes_track_json_lists_each_phoneme_with_its_class() -> None:
    result = runner.invoke(app, ["visemes", "Mama", "--lang", "de", "--track", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["phoneme"] for r in rows] == ["m", "ˈɑ", "m", "ɑː"]
    assert [r["viseme"] for r in rows] == ["MBP", "AI", "MBP", "AI"]
    assert all(r["start_ms"] < r["end_ms"] for r in rows)


def test_visemes_table_voice_rate_pitch_and_lead() -> None:
    slow = runner.invoke(
        app, ["visemes", "Hello there", "--voice", "en-us", "--rate", "90", "--track", "--json"]
    )
    fast = runner.invoke(
        app, ["visemes", "Hello there", "--voice", "en-us", "--rate", "400", "--track", "--json"]
    )
    assert slow.exit_code == fast.exit_code == 0
    assert json.loads(slow.stdout)[-1]["end_ms"] > 2 * json.loads(fast.stdout)[-1]["end_ms"]
    table = runner.invoke(
        app, ["visemes", "Hallo", "--pitch", "70", "--lead-ms", "30", "--fps", "25"]
    )
    assert table.exit_code == 0, table.output
    assert "25 fps" in table.stdout and "mouth lead 30 ms" in table.stdout
    assert "AI" in table.stdout


def test_visemes_plot_writes_a_png(tmp_path: Path) -> None:
    out = tmp_path / "plots" / "hallo.png"
    result = runner.invoke(app, ["visemes", "Hallo Mama", "--plot", str(out), "--json"])
    assert result.exit_code == 0, result.output
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width >= 800


def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    cases = [
        (["visemes", "Hallo", "--voice", "klingon"], "unknown voice 'klingon'"),
        (["visemes", "Hallo", "--lang", "xx"], "unknown voice 'xx'"),
        (["visemes", "   "], "text is empty"),
        (["visemes", "Hallo", "--rate", "5"], "rate=5 is out of range"),
        (["visemes", "Hallo", "--fps", "0"], "fps=0"),
        (["visemes", "Hallo", "--plot", str(tmp_path / "x.jpg")], "PNG"),
        (["visemes", "a" * 6000], "the limit is 5000"),
        (["voices", "--tts", "nope"], "No TTS source named 'nope'"),
        (["voices", "--lang", "tlh"], "no voice for language 'tlh'"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.output
        lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error")]
        assert len(lines) == 1


def test_voices_lists_espeak_voices() -> None:
    result = runner.invoke(app, ["voices", "--tts", "espeak", "--json"])
    assert result.exit_code == 0, result.output
    voices = {v["id"]: v for v in json.loads(result.stdout)}
    assert voices["de"]["language"] == "de" and voices["en-us"]["language"] == "en-us"
    german = runner.invoke(app, ["voices", "--lang", "de"])
    assert german.exit_code == 0 and "German" in german.stdout
