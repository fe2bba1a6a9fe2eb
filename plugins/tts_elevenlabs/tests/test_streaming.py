"""The client against the real local mock: audio, timelines, transports, reuse, text streams."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from _el_helpers import assert_same_timings, audio_ms, chars_of, collect, deltas, text_of
from lipcore_tts_elevenlabs.mock import MockElevenLabs

from conftest import DE, EN

pytestmark = pytest.mark.anyio

SENTENCE = "Guten Morgen, wie geht es Ihnen heute?"


@pytest.mark.parametrize("transport", ["multi", "single", "http"])
@pytest.mark.parametrize("fmt", ["pcm_16000", "pcm_24000"])
async def test_audio_and_char_timeline_match_the_vendor_truth(
    mock: MockElevenLabs, make_source: Any, transport: str, fmt: str
) -> None:
    source = make_source(transport=transport, output_format=fmt)
    chunks = await collect(source.synthesize(SENTENCE, voice=DE))
    rate = int(fmt.split("_")[1])
    assert chunks[-1].final and chunks[-1].audio == b""
    assert all(c.sample_rate == rate for c in chunks)
    # pts continuous: each chunk starts where the previous ended
    for a, b in itertools.pairwise(chunks):
        assert b.pts_ms == pytest.approx(a.end_ms)
    (rec,) = [r for r in mock.records if r.generations]
    assert audio_ms(chunks) == pytest.approx(sum(g.duration_ms for g in rec.generations), abs=0.1)
    got = chars_of(chunks)
    assert text_of(got) == SENTENCE
    # Per-chunk relative integer ms → absolute: equal to what was sent, and to the truth
    # within the vendor's 1 ms rounding.
    assert_same_timings(got, rec.sent_chars, tol_ms=0.01)
    assert_same_timings(got, rec.true_chars, tol_ms=1.01)
    assert len(chunks) > 4  # several frames, so offsets were exercised


async def test_two_utterances_one_connection(mock: MockElevenLabs, make_source: Any) -> None:
    source = make_source()
    await collect(source.synthesize("Erster Satz.", voice=DE))
    t0 = time.perf_counter()
    await collect(source.synthesize("Zweiter Satz.", voice=DE))
    assert mock.connections == 1 and source.stats["connections_opened"] == 1
    assert mock.handshakes[0] < t0
    contexts = mock.contexts("multi")
    assert len(contexts) == 2 and contexts[0].connection == contexts[1].connection
    assert contexts[0].context_id != contexts[1].context_id
    # vendor protocol: init frame first (text " "), then text + flush, then close_context
    msgs = contexts[1].messages
    assert msgs[0]["text"] == " " and msgs[0]["context_id"] == contexts[1].context_id
    assert msgs[1] == {
        "text": "Zweiter Satz. ",
        "flush": True,
        "context_id": contexts[1].context_id,
    }
    assert msgs[-1] == {"context_id": contexts[1].context_id, "close_context": True}


async def test_sessions_get_their_own_socket(mock: MockElevenLabs, make_source: Any) -> None:
    source = make_source()
    await collect(source.synthesize("Eins.", voice=DE, options={"session_id": "a"}))
    await collect(source.synthesize("Zwei.", voice=DE, options={"session_id": "b"}))
    await collect(source.synthesize("Drei.", voice=DE, options={"session_id": "a"}))
    assert mock.connections == 2
    await source.close_session("a")
    await collect(source.synthesize("Vier.", voice=DE, options={"session_id": "a"}))
    assert mock.connections == 3


async def test_single_transport_preopens_the_next_socket(
    mock: MockElevenLabs, make_source: Any
) -> None:
    source = make_source(transport="single")
    await collect(source.synthesize("Erster Satz.", voice=DE))
    await asyncio.sleep(0.3)  # the next socket opens in the background
    opened_before = len(mock.handshakes)
    t0 = time.perf_counter()
    chunks = await collect(source.synthesize("Zweiter Satz.", voice=DE))
    assert text_of(chars_of(chunks)) == "Zweiter Satz."
    assert opened_before == 2 and mock.handshakes[1] < t0  # no handshake on the second
    rec = [r for r in mock.contexts("single") if r.generations][-1]
    assert rec.messages[0]["text"] == " " and rec.messages[-1] == {"text": ""}
    assert rec.final_sent


async def test_settings_per_utterance_reach_the_vendor(
    mock: MockElevenLabs, make_source: Any
) -> None:
    source = make_source(voice_settings={"stability": 0.4}, chunk_length_schedule=[50, 120])
    await collect(
        source.synthesize(
            "Hello there.",
            voice=EN,
            options={
                "language_code": "en",
                "voice_settings": {"stability": 0.9, "speed": 1.1},
                "output_format": "pcm_24000",
            },
        )
    )
    rec = mock.contexts("multi")[0]
    assert rec.query["language_code"] == "en" and rec.query["output_format"] == "pcm_24000"
    assert rec.query["model_id"] == "eleven_flash_v2_5" and rec.query["sync_alignment"] == "true"
    init = rec.messages[0]
    assert init["voice_settings"]["stability"] == 0.9 and init["voice_settings"]["speed"] == 1.1
    assert init["generation_config"] == {"chunk_length_schedule": [50, 120]}


@pytest.mark.parametrize("transport", ["multi", "single", "http"])
async def test_streamed_tokens_flush_per_sentence_on_one_timeline(
    mock: MockElevenLabs, make_source: Any, transport: str
) -> None:
    source = make_source(transport=transport)
    parts = ["Gu", "ten ", "Tag. ", "Wie ", "geh", "t es ", "Ihnen?"]
    chunks = await collect(source.synthesize(deltas(parts, pause=0.05), voice=DE))
    got = chars_of(chunks)
    assert text_of(got).replace("  ", " ").strip() == "Guten Tag. Wie geht es Ihnen?"
    recs = [r for r in mock.records if r.generations]
    if transport == "http":
        assert [r.text for r in recs] == ["Guten Tag.", "Wie geht es Ihnen?"]
        # the second request's timeline continues after the first one's audio
        first_len = recs[0].generations[0].duration_ms
        second = [c for c in got if c.start_ms >= first_len - 1]
        assert text_of(second).strip().startswith("Wie")
    else:
        (rec,) = recs
        texts = [m.get("text") for m in rec.messages if m.get("text", " ").strip()]
        assert texts == ["Guten ", "Tag. ", "Wie ", "geht es ", "Ihnen? "]
        flushed = [m["text"] for m in rec.messages if m.get("flush") and m.get("text")]
        assert "Tag. " in flushed  # the first sentence went out at once
        assert [g.text.strip() for g in rec.generations] == ["Guten Tag.", "Wie geht es Ihnen?"]
        assert rec.generations[1].start_ms == pytest.approx(rec.generations[0].duration_ms, abs=0.1)
        assert_same_timings(
            [c for c in got if c.char.strip()],
            [c for c in rec.true_chars if c.char.strip()],
            tol_ms=1.01,
        )


async def test_null_alignment_frames_lose_only_their_chars(
    mock: MockElevenLabs, make_source: Any
) -> None:
    mock.config.null_alignment_frames = frozenset({1})
    mock.config.null_normalized_frames = frozenset({2})
    source = make_source()
    chunks = await collect(source.synthesize(SENTENCE, voice=DE))
    got = chars_of(chunks)
    rec = mock.contexts("multi")[0]
    frame1 = [c for c in rec.sent_chars if chunks[1].pts_ms <= c.start_ms < chunks[2].pts_ms]
    assert chunks[1].chars == () and frame1  # that frame's characters are gone...
    assert chunks[2].chars  # ...the frame with only normalized null used the original
    want = [c for c in rec.sent_chars if c not in frame1]
    assert_same_timings(got, want, tol_ms=0.01)  # ...and nothing after them shifted


async def test_spec_spelling_of_durations(mock: MockElevenLabs, make_source: Any) -> None:
    mock.config.durations_key = "charsDurationsMs"
    chunks = await collect(make_source().synthesize(SENTENCE, voice=DE))
    assert_same_timings(chars_of(chunks), mock.contexts("multi")[0].sent_chars, tol_ms=0.01)


async def test_words_split_across_chunks_keep_their_times(
    mock: MockElevenLabs, make_source: Any
) -> None:
    mock.config.chunk_ms = 60.0  # frames shorter than most words
    chunks = await collect(make_source().synthesize(SENTENCE, voice=DE))
    split = sum(
        1
        for a, b in itertools.pairwise(chunks)
        if a.chars and b.chars and a.chars[-1].char.isalpha() and b.chars[0].char.isalpha()
    )
    assert split >= 2
    assert_same_timings(chars_of(chunks), mock.contexts("multi")[0].true_chars, tol_ms=1.01)


async def test_keepalive_holds_a_slow_text_stream(mock: MockElevenLabs, make_source: Any) -> None:
    mock.config.idle_timeout_cap_s = 1.0
    source = make_source(keepalive_interval_s=0.3)
    chunks = await collect(
        source.synthesize(deltas(["Ich ", "denke ", "nach. "], pauses={1: 2.2}), voice=DE)
    )
    assert "nach." in text_of(chars_of(chunks))
    rec = mock.contexts("multi")[0]
    keepalives = [m for m in rec.messages if m.get("text") == "" and "flush" not in m]
    assert len(keepalives) >= 3


async def test_voices_are_listed_and_cached(mock: MockElevenLabs, make_source: Any) -> None:
    source = make_source()
    voices = await source.voices()
    assert {v.id: v.language for v in voices} == {DE: "de", EN: "en"}
    mock.config.api_key = "changed"  # a second call must not reach the server
    assert await source.voices() == voices


async def test_language_code_sets_the_voices_language(
    mock: MockElevenLabs, make_source: Any
) -> None:
    # A multilingual voice labelled "en" asked to speak German: the mouth follows German G2P.
    voices = await make_source(language_code="de").voices()
    assert {v.id: v.language for v in voices} == {DE: "de", EN: "de"}
