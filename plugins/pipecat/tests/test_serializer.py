"""LipcoreFrameSerializer against lipcore's protocol v1: every message it writes validates with
lipcore's own models (``lipcore.server.protocol``) and reads back with its decoders; the client
vectors (``tests/vectors/client.*.json``) give the input, valid and invalid."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from lipcore_pipecat import (
    LipcoreFrameSerializer,
    LipcoreUtteranceEndFrame,
    LipcoreUtteranceStartFrame,
    LipcoreVisemesFrame,
)
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
    OutputAudioRawFrame,
    OutputTransportMessageFrame,
    OutputTransportMessageUrgentFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
)

from lipcore.interfaces import VisemeFrame
from lipcore.server.protocol import (
    AUDIO_KIND,
    AUDIO_VISEMES_KIND,
    split_audio_visemes,
    unpack_frame,
    validate_server_message,
)

VECTORS = Path(__file__).resolve().parents[3] / "tests" / "vectors"
CTX = "ctx-1"


def ser(frame: Frame, s: LipcoreFrameSerializer) -> str | bytes | None:
    return asyncio.run(s.serialize(frame))


def de(data: str | bytes, s: LipcoreFrameSerializer) -> Frame | None:
    return asyncio.run(s.deserialize(data))


def text_msg(out: str | bytes | None) -> dict[str, Any]:
    assert isinstance(out, str), out
    msg = json.loads(out)
    validate_server_message(msg)  # raises if it is not protocol v1
    return msg  # type: ignore[no-any-return]


def pcm(ms: float, rate: int = 24000) -> bytes:
    n = round(rate * ms / 1000)
    t = np.arange(n) / rate
    return (3000 * np.sin(2 * np.pi * 200 * t)).astype("<i2").tobytes()


def vis(*pts: float, provisional: bool = False, ctx: str = CTX) -> LipcoreVisemesFrame:
    return LipcoreVisemesFrame(context_id=ctx, provisional=provisional,
                               frames=[VisemeFrame(p, {"AI": 0.6, "E": 0.2}) for p in pts])


def audio(ms: float, rate: int = 24000) -> OutputAudioRawFrame:
    return OutputAudioRawFrame(pcm(ms, rate), sample_rate=rate, num_channels=1)


def test_hello_is_protocol_v1() -> None:
    s = LipcoreFrameSerializer(session_id="s1", lipsync={"type": "sprites", "atlas_url": "a"},
                               sample_rate=24000)
    hello = text_msg(ser(s.hello_frame(), s))
    assert hello["type"] == "hello" and hello["audio"]["sample_rate"] == 24000
    assert hello["viseme_events"] == "inline" and hello["lipsync"]["atlas_url"] == "a"


@pytest.mark.parametrize("form", ["inline", "batched"])
def test_an_utterance_in_order(form: str) -> None:
    s = LipcoreFrameSerializer(visemes=form, sample_rate=24000)
    start = text_msg(ser(LipcoreUtteranceStartFrame(context_id=CTX, sample_rate=24000,
                                                    text="Hi there"), s))
    assert start == {**start, "type": "utterance_start", "utterance": 1, "sample_rate": 24000,
                     "text": "Hi there"}
    out = [ser(vis(0.0, 33.3), s), ser(audio(40), s), ser(audio(40), s),
           ser(vis(66.7, 100.0), s), ser(audio(40), s)]
    if form == "batched":
        events = [text_msg(out[0]), text_msg(out[3])]
        assert [f["pts_ms"] for e in events for f in e["frames"]] == [0.0, 33.3, 66.7, 100.0]
        frames = [unpack_frame(b) for b in (out[1], out[2], out[4])]  # type: ignore[arg-type]
        assert {h.kind for h, _ in frames} == {AUDIO_KIND}
    else:
        # Each event rides in the next audio frame (kind 3); audio without one is kind 1.
        assert out[0] is None and out[3] is None
        frames = [unpack_frame(b) for b in (out[1], out[2], out[4])]  # type: ignore[arg-type]
        assert [h.kind for h, _ in frames] == [AUDIO_VISEMES_KIND, AUDIO_KIND,
                                               AUDIO_VISEMES_KIND]
        ev0, pcm0 = split_audio_visemes(frames[0][1])
        assert len(pcm0) == len(pcm(40))
        assert [f["pts_ms"] for f in text_msg(ev0)["frames"]] == [0.0, 33.3]
        ev2, _ = split_audio_visemes(frames[2][1])
        assert text_msg(ev2)["utterance"] == 1
    # Audio pts: where each chunk starts on the utterance's timeline.
    assert [h.pts_ms for h, _ in frames] == [0.0, 40.0, 80.0]
    assert {h.utterance for h, _ in frames} == {1}
    end = text_msg(ser(LipcoreUtteranceEndFrame(context_id=CTX, duration_ms=120.0), s))
    assert end["utterance"] == 1 and end["duration_ms"] == 120.0 and end["reason"] == "done"
    # The next utterance is numbered 2 and starts at pts 0 again.
    text_msg(ser(LipcoreUtteranceStartFrame(context_id="ctx-2", sample_rate=24000), s))
    h, _ = unpack_frame(ser(audio(20), s))  # type: ignore[arg-type]
    assert (h.utterance, h.pts_ms) == (2, 0.0)


def test_inline_merges_two_events_before_one_chunk_and_keeps_guesses_apart() -> None:
    s = LipcoreFrameSerializer(sample_rate=24000)
    ser(LipcoreUtteranceStartFrame(context_id=CTX, sample_rate=24000), s)
    assert ser(vis(0.0, 33.3, provisional=True), s) is None
    assert ser(vis(66.7, provisional=True), s) is None  # merged with the pending guess
    out = ser(vis(0.0, 33.3), s)  # a final event: the pending guess goes out as text
    guess = text_msg(out)
    assert guess["provisional"] is True and [f["pts_ms"] for f in guess["frames"]] == \
        [0.0, 33.3, 66.7]
    _, payload = unpack_frame(ser(audio(40), s))  # type: ignore[arg-type]
    ev, _ = split_audio_visemes(payload)
    final = text_msg(ev)
    assert final.get("provisional", False) is False and len(final["frames"]) == 2
    # A guess after a final frame is never sent.
    ser(vis(100.0), s)
    assert ser(vis(133.3, provisional=True), s) is None
    _, payload = unpack_frame(ser(audio(40), s))  # type: ignore[arg-type]
    assert [f["pts_ms"] for f in text_msg(split_audio_visemes(payload)[0])["frames"]] == [100.0]


def test_an_interruption_sends_stop_and_nothing_of_the_utterance_follows() -> None:
    s = LipcoreFrameSerializer(visemes="batched", sample_rate=24000)
    ser(LipcoreUtteranceStartFrame(context_id=CTX, sample_rate=24000), s)
    for _ in range(5):
        ser(audio(40), s)
    stop = text_msg(ser(InterruptionFrame(), s))
    assert stop == {**stop, "type": "stop", "utterance": 1, "at_pts_ms": 200.0,
                    "reason": "barge_in"}
    assert 100 <= stop["ramp_ms"] <= 200
    # Stragglers of the stopped utterance (already queued past the transport's purge) are
    # dropped: its stop is its last message.
    assert ser(vis(300.0), s) is None
    assert ser(LipcoreUtteranceEndFrame(context_id=CTX, duration_ms=400), s) is None
    # A storm of interruptions after it sends nothing more.
    assert all(ser(InterruptionFrame(), s) is None for _ in range(100))
    # A stop from the client is answered with reason "client".
    ser(LipcoreUtteranceStartFrame(context_id="ctx-2", sample_rate=24000), s)
    ser(audio(40), s)
    assert isinstance(de('{"type":"stop"}', s), InterruptionFrame)
    assert text_msg(ser(InterruptionFrame(), s))["reason"] == "client"


def test_stop_before_anything_was_said_sends_nothing() -> None:
    s = LipcoreFrameSerializer(sample_rate=24000)
    assert ser(InterruptionFrame(), s) is None


@pytest.mark.parametrize("rate", [16000, 22050, 48000])
def test_audio_at_another_rate_is_resampled_to_the_announced_rate(rate: int) -> None:
    s = LipcoreFrameSerializer(visemes="batched", sample_rate=24000)
    start = text_msg(ser(LipcoreUtteranceStartFrame(context_id=CTX, sample_rate=rate), s))
    assert start["sample_rate"] == 24000  # what the client gets is announced
    got = 0
    last_pts = -1.0
    for _ in range(25):  # 1 s
        out = ser(audio(40, rate), s)
        if out is None:
            continue
        h, payload = unpack_frame(out)  # type: ignore[arg-type]
        assert h.pts_ms > last_pts and h.pts_ms == pytest.approx(got / 24.0, abs=1e-6)
        last_pts = h.pts_ms
        got += len(payload) // 2
    # All of it, on time (the resampler holds back at most a few ms).
    assert 24000 - 240 <= got <= 24000


def test_stereo_audio_is_mixed_down() -> None:
    s = LipcoreFrameSerializer(visemes="batched", sample_rate=24000)
    ser(LipcoreUtteranceStartFrame(context_id=CTX, sample_rate=24000), s)
    stereo = np.repeat(np.frombuffer(pcm(40), "<i2")[:, None], 2, axis=1).tobytes()
    _, payload = unpack_frame(ser(OutputAudioRawFrame(stereo, 24000, 2), s))  # type: ignore[arg-type]
    assert payload == pcm(40)


def test_audio_of_another_tts_is_an_utterance_of_its_own() -> None:
    s = LipcoreFrameSerializer(sample_rate=24000)
    h1, _ = unpack_frame(ser(TTSAudioRawFrame(pcm(40), 24000, 1), s))  # type: ignore[arg-type]
    h2, _ = unpack_frame(ser(TTSAudioRawFrame(pcm(40), 24000, 1), s))  # type: ignore[arg-type]
    assert (h1.utterance, h1.pts_ms, h2.utterance, h2.pts_ms) == (1, 0.0, 1, 40.0)
    assert text_msg(ser(InterruptionFrame(), s))["utterance"] == 1
    h3, _ = unpack_frame(ser(TTSAudioRawFrame(pcm(40), 24000, 1), s))  # type: ignore[arg-type]
    assert h3.utterance == 2


def test_frames_outside_the_protocol_send_nothing() -> None:
    s = LipcoreFrameSerializer(sample_rate=24000)
    assert ser(TextFrame("hello"), s) is None
    assert ser(EndFrame(), s) is None
    assert ser(OutputTransportMessageFrame(message={"label": "rtvi-ai", "type": "x"}), s) is None
    assert ser(OutputTransportMessageUrgentFrame(message="not a dict"), s) is None
    assert ser(OutputTransportMessageFrame(message={"type": "no_such_type"}), s) is None
    # The protocol's own messages pass (e.g. an app's error for the client).
    err = {"type": "error", "code": "internal", "message": "x"}
    assert text_msg(ser(OutputTransportMessageFrame(message=err), s)) == err
    # Visemes of a context never started (another pipeline's) are not sent.
    assert ser(vis(0.0, ctx="unknown"), s) is None


def test_single_viseme_events_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="single"):
        LipcoreFrameSerializer(visemes="single")
    with pytest.raises(ValueError, match="text_in"):
        LipcoreFrameSerializer(text_in="shout")  # type: ignore[arg-type]


def _vectors(kind: str) -> dict[str, Any]:
    return json.loads((VECTORS / f"client.{kind}.json").read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["ping", "speak", "stop", "text_delta", "text_end"])
def test_client_vectors(kind: str) -> None:
    for mode in ("user", "speak"):
        s = LipcoreFrameSerializer(text_in=mode)  # type: ignore[arg-type]
        for case in _vectors(kind)["valid"]:
            frame = de(json.dumps(case["message"]), s)
            if kind == "ping":
                assert isinstance(frame, OutputTransportMessageUrgentFrame)
                pong = text_msg(ser(frame, s))
                assert pong["id"] == case["message"]["id"]
            elif kind == "stop":
                assert isinstance(frame, InterruptionFrame)
            elif kind == "speak":
                want = TTSSpeakFrame if mode == "speak" else LLMMessagesAppendFrame
                assert isinstance(frame, want), case
        for case in _vectors(kind)["invalid"]:
            frame = de(json.dumps(case["message"]), s)
            assert isinstance(frame, OutputTransportMessageUrgentFrame), case
            err = text_msg(ser(frame, s))
            assert err["code"] in ("bad_message", "empty_text"), (case, err)


def test_streamed_text() -> None:
    s = LipcoreFrameSerializer(text_in="user")
    assert de('{"type":"text_delta","delta":"Hello "}', s) is None
    assert de('{"type":"text_delta","delta":"world"}', s) is None
    frame = de('{"type":"text_end"}', s)
    assert isinstance(frame, LLMMessagesAppendFrame) and frame.run_llm
    assert frame.messages == [{"role": "user", "content": "Hello world"}]
    s = LipcoreFrameSerializer(text_in="speak")
    delta = de('{"type":"text_delta","delta":"Hello "}', s)
    assert isinstance(delta, LLMTextFrame) and delta.text == "Hello "
    assert isinstance(de('{"type":"text_end"}', s), LLMFullResponseEndFrame)


def test_garbage_from_the_client() -> None:
    s = LipcoreFrameSerializer(max_message_bytes=1000, max_invalid_messages=5,
                               max_text_chars=50)
    for data, code in [("not json {", "bad_message"), ('{"type":"dance"}', "bad_message"),
                       (b"\x00\x01binary", "bad_message"), ("x" * 2000, "message_too_big"),
                       ('{"type":"speak","text":"' + "a" * 60 + '"}', "limit_exceeded")]:
        frame = de(data, s)
        assert isinstance(frame, OutputTransportMessageUrgentFrame), data
        err = text_msg(ser(frame, s))
        assert err["code"] == code and err["message"], err
    # Valid messages still work between invalid ones.
    assert isinstance(de('{"type":"speak","text":"ok"}', s), LLMMessagesAppendFrame)
    # Past the limit of invalid messages the client is let go (the pipeline ends).
    frames = [de("{", s) for _ in range(3)]
    assert isinstance(frames[-1], EndFrame)
    # Too long a streamed turn.
    s = LipcoreFrameSerializer(max_text_chars=10)
    assert de('{"type":"text_delta","delta":"abcdefgh"}', s) is None
    over = de('{"type":"text_delta","delta":"abcdefgh"}', s)
    assert isinstance(over, OutputTransportMessageUrgentFrame)
    assert text_msg(ser(over, s))["code"] == "limit_exceeded"
