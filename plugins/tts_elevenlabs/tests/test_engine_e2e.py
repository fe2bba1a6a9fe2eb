"""End to end through lipcore: plugin discovery, Engine → ElevenLabs (mock) → viseme frames,
and viseme timing from characters against the true phoneme times."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from lipcore_tts_elevenlabs import ElevenLabsTTSSource
from lipcore_tts_elevenlabs.accuracy import compare_tracks
from lipcore_tts_elevenlabs.mock import MockElevenLabs

from conftest import DE, EN
from lipcore import Engine, EngineSettings, get_plugin_manager
from lipcore.plugins import PluginRegistry

pytestmark = pytest.mark.anyio


def _engine(mock: MockElevenLabs, **tts: Any) -> Engine:
    options = {"api_key": mock.api_key, "base_url": mock.base_url, **tts}
    return Engine(
        settings=EngineSettings(default_tts="elevenlabs", tts_options={"elevenlabs": options})
    )


def test_the_plugin_is_discovered_under_its_name_and_alias() -> None:
    registry = PluginRegistry(get_plugin_manager())
    reg = registry.get("tts_sources", "elevenlabs")
    assert reg.factory is ElevenLabsTTSSource
    assert reg.distribution == "lipcore-tts-elevenlabs"
    assert registry.get("tts_sources", "11labs").factory is ElevenLabsTTSSource


@pytest.mark.parametrize(
    ("voice", "text"),
    [
        (DE, "Mama und Papa bauen ein Boot am Meer."),
        (EN, "My mother baked a pie for the whole family."),
    ],
)
async def test_engine_speaks_with_visemes_that_follow_the_true_phonemes(
    mock: MockElevenLabs, voice: str, text: str
) -> None:
    engine = _engine(mock)
    try:
        utt = await engine.utterance(text, voice=voice, lead_ms=0)
        steps = [step async for step in utt]
        assert utt.language == ("de" if voice == DE else "en")
        assert sum(len(s.chunk.audio) for s in steps) > 0 and utt.frames
        pts = [f.pts_ms for f in utt.frames]
        assert pts == sorted(pts) and len(set(pts)) == len(pts)
        (rec,) = [r for r in mock.records if r.generations]
        # bilabials of the text reach MBP in the frames
        assert any(max(f.weights, key=f.weights.get, default="") == "MBP" for f in utt.frames)
        mapper = engine.mapper()
        true_track = mapper.track_from_phonemes(rec.true_phonemes, language=utt.language)
        char_track = mapper.track_from_characters(utt.chars, language=utt.language)
        report = compare_tracks(true_track, char_track)
        assert report.match_rate > 0.7, report
        assert report.mae_ms < 60.0, report
    finally:
        await engine.aclose()


async def test_engine_streamed_tokens(mock: MockElevenLabs) -> None:
    async def tokens() -> Any:
        for t in ["Guten ", "Morgen. ", "Bitte ", "mehr ", "Milch."]:
            yield t

    engine = _engine(mock)
    try:
        utt = await engine.utterance(tokens(), voice=DE)
        steps = [s async for s in utt]
        assert steps[-1].chunk.final
        assert "".join(c.char for c in utt.chars).split() == [
            "Guten",
            "Morgen.",
            "Bitte",
            "mehr",
            "Milch.",
        ]
        assert utt.frames[-1].weights == {} or sum(utt.frames[-1].weights.values()) < 0.05
    finally:
        await engine.aclose()


def test_cli_lists_voices_from_the_environment_and_says_what_a_bad_key_means(
    mock: MockElevenLabs, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from lipcore.cli import app

    monkeypatch.setenv("ELEVENLABS_BASE_URL", mock.base_url)
    monkeypatch.setenv("ELEVENLABS_API_KEY", mock.api_key)
    runner = CliRunner()
    ok = runner.invoke(app, ["voices", "--tts", "elevenlabs", "--json"])
    assert ok.exit_code == 0, ok.output
    assert {v["id"]: v["language"] for v in json.loads(ok.output)} == {DE: "de", EN: "en"}
    monkeypatch.setenv("ELEVENLABS_API_KEY", "sk-wrong-key-0123456789")
    bad = runner.invoke(app, ["voices", "--tts", "elevenlabs"])
    text = " ".join(bad.output.split())
    assert bad.exit_code != 0
    assert "elevenlabs_auth" in text and "ELEVENLABS_API_KEY" in text
    assert "sk-wrong-key-0123456789" not in text


@pytest.mark.network
@pytest.mark.skipif(not os.environ.get("ELEVENLABS_API_KEY"), reason="ELEVENLABS_API_KEY not set")
async def test_real_service_speaks_with_timings() -> None:
    """Against the real vendor (base URL from ELEVENLABS_BASE_URL, voice from
    ELEVENLABS_VOICE_ID or the account's first voice)."""
    source = ElevenLabsTTSSource()
    try:
        voices = await source.voices()
        voice = os.environ.get("ELEVENLABS_VOICE_ID") or voices[0].id
        for transport in ("multi", "http"):
            chunks = [
                c
                async for c in source.synthesize(
                    "Hallo, hier spricht lipcore.",
                    voice=voice,
                    options={"transport": transport, "language_code": "de"},
                )
            ]
            text = "".join(ch.char for c in chunks for ch in c.chars)
            assert "lipcore" in text.replace(" ", "").lower() or "hallo" in text.lower()
            assert sum(len(c.audio) for c in chunks) > 22050  # more than half a second
    finally:
        await source.aclose()
