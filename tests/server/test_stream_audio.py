"""A session speaks a recording streamed over its WebSocket (``audio_start``, binary PCM
frames, ``audio_end``): real server on loopback, real WebSocket client, real espeak-ng speech
sent in 40 ms frames as a phone call or a microphone would. The mouth comes from the streaming
audio estimator; audio leaves only once its visemes are known; barge-in works as for text."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import numpy as np
import soxr
from websockets.asyncio.client import connect

from lipcore.speech._synthdata import synthesize

from .conftest import Received, RunningServer, is_json, recv_one, recv_until
from .test_flow import open_session

TEXT = "Mama und Papa bauen am Meer ein Boot."


def _pcm(rate: int, repeat: int = 1) -> bytes:
    u = synthesize(TEXT, "de")
    y = soxr.resample(u.pcm.astype(np.float32) / 32768.0, u.sample_rate, rate)
    pcm = (np.clip(y, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    return pcm * repeat


async def _send_frames(ws: Any, pcm: bytes, rate: int, *, frame_ms: float = 40.0,
                       pace: float = 0.25) -> None:
    """Binary frames of ``frame_ms`` of audio, each ``pace`` × its duration after the last."""
    step = int(rate * frame_ms / 1000.0) * 2
    for i in range(0, len(pcm), step):
        await ws.send(pcm[i : i + step])
        await asyncio.sleep(frame_ms / 1000.0 * pace)


def _viseme_frames(item: tuple[Any, ...]) -> list[dict[str, Any]]:
    if item[0] == "json" and item[1]["type"] == "visemes":
        return list(item[1]["frames"])
    return []


def test_streamed_recording_is_spoken_with_its_mouth_known_before_its_audio(
        server: RunningServer) -> None:
    async def body() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            s = await open_session(client, server)
            rec = Received()
            async with connect(s["ws_url"]) as ws:
                _, hello = await recv_one(ws, rec)
                rate = hello["audio"]["sample_rate"]
                pcm = _pcm(rate)
                await ws.send(json.dumps({"type": "audio_start", "text": TEXT,
                                          "language": "de"}))
                await _send_frames(ws, pcm, rate)
                await ws.send(json.dumps({"type": "audio_end"}))
                await recv_until(ws, rec, is_json("utterance_end", utterance=1))
                start = rec.json("utterance_start")[0]
                assert start["text"] == TEXT and start["sample_rate"] == rate
                got = b"".join(p for _, p in rec.audio(1))
                assert got == pcm  # every sample, in order, nothing added
                # Each piece of audio left with (or after) the mouth for all of it.
                known = -1.0
                for item in rec.items:
                    for f in _viseme_frames(item):
                        known = max(known, f["pts_ms"])
                    if item[0] == "audio" and item[1].utterance == 1 and item[2]:
                        end_ms = item[1].pts_ms + len(item[2]) / 2 / rate * 1000.0
                        if end_ms < len(pcm) / 2 / rate * 1000.0 - 1.0:  # not the last piece
                            assert known >= end_ms - 1.0, (known, end_ms)
                frames = [f for it in rec.items for f in _viseme_frames(it)]
                closed = [f["pts_ms"] for f in frames if f["weights"].get("MBP", 0) >= 0.5]
                assert len(closed) >= 4, frames  # Mama, Papa, Meer, Boot
                assert frames[-1]["weights"] == {}
                end = rec.json("utterance_end")[0]
                assert end["reason"] == "done"
                assert abs(end["duration_ms"] - len(pcm) / 2 / rate * 1000.0) < 1.0
                errors = rec.json("error")
                assert not errors, errors
                u = (await client.get(f"{server.url}/session-2d/{s['session_id']}/usage")).json()
                assert u["tts_characters"] == 0

    asyncio.run(body())


def test_stop_cuts_a_streamed_recording_and_the_rest_of_it_is_dropped(
        server: RunningServer) -> None:
    async def body() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            s = await open_session(client, server)
            rec = Received()
            async with connect(s["ws_url"]) as ws:
                _, hello = await recv_one(ws, rec)
                rate = hello["audio"]["sample_rate"]
                pcm = _pcm(rate, repeat=4)
                half = len(pcm) // 4 // 2 * 2
                await ws.send(json.dumps({"type": "audio_start"}))
                await _send_frames(ws, pcm[:half], rate, pace=0.0)
                await recv_until(ws, rec, lambda it: it[0] == "audio" and it[1].utterance == 1)
                await ws.send(json.dumps({"type": "stop"}))
                _, stop = await recv_until(ws, rec, is_json("stop"))
                assert stop["utterance"] == 1
                n_audio = len(rec.audio(1))
                # The client still streams what it had: dropped quietly, no errors.
                await _send_frames(ws, pcm[half:], rate, pace=0.0)
                await ws.send(json.dumps({"type": "audio_end"}))
                # Then it speaks again, text this time: utterance 2, heard to its end.
                await ws.send(json.dumps({"type": "speak", "text": "Noch einmal."}))
                await recv_until(ws, rec, is_json("utterance_end", utterance=2))
                assert len(rec.audio(1)) == n_audio
                assert not rec.json("error"), rec.json("error")
                # A barge-in audio_start replaces a long streamed recording at once.
                await ws.send(json.dumps({"type": "audio_start"}))
                await _send_frames(ws, pcm[:half], rate, pace=0.0)
                await recv_until(ws, rec, lambda it: it[0] == "audio" and it[1].utterance == 3)
                await ws.send(json.dumps({"type": "audio_start", "barge_in": True}))
                _, stop = await recv_until(ws, rec, is_json("stop", utterance=3))
                assert stop["reason"] == "barge_in"
                await _send_frames(ws, pcm[: half // 2 // 2 * 2], rate, pace=0.0)
                await ws.send(json.dumps({"type": "audio_end"}))
                await recv_until(ws, rec, is_json("utterance_end", utterance=4))
                assert not rec.json("error"), rec.json("error")

    asyncio.run(body())


def test_bad_streamed_audio_gets_clear_errors(make_server: Any) -> None:
    srv = make_server(max_stream_audio_s=1.0, stream_idle_timeout_s=1.0)

    async def body() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            s = await open_session(client, srv)
            rec = Received()
            async with connect(s["ws_url"]) as ws:
                _, hello = await recv_one(ws, rec)
                rate = hello["audio"]["sample_rate"]
                # PCM with no recording open
                await ws.send(b"\x00\x00" * 160)
                _, err = await recv_until(ws, rec, is_json("error"))
                assert err["code"] == "bad_message" and "audio_start" in err["message"]
                # an odd number of bytes is no s16le
                await ws.send(json.dumps({"type": "audio_start"}))
                await ws.send(b"\x00" * 3)
                _, err = await recv_until(ws, rec, lambda it: is_json("error")(it)
                                          and it[1] is not err)
                assert err["code"] == "bad_message" and "even" in err["message"]
                # a second audio_start while one is open
                await ws.send(json.dumps({"type": "audio_start"}))
                _, err = await recv_until(ws, rec, lambda it: is_json("error")(it)
                                          and "already open" in it[1]["message"])
                # over the length limit (1 s here): an error, the recording ends there and
                # is spoken up to the limit
                await _send_frames(ws, _pcm(rate)[: 2 * rate * 2], rate, pace=0.0)
                _, err = await recv_until(ws, rec, lambda it: is_json("error")(it)
                                          and it[1]["code"] == "limit_exceeded")
                await recv_until(ws, rec, is_json("utterance_end", utterance=1))
                heard = sum(len(p) for _, p in rec.audio(1)) / 2 / rate
                assert 0.5 < heard <= 1.0, heard
                # a producer that goes quiet without audio_end: ended after the idle timeout
                await ws.send(json.dumps({"type": "audio_end"}))
                await ws.send(json.dumps({"type": "audio_start"}))
                await _send_frames(ws, _pcm(rate)[: rate // 2 * 2], rate, pace=0.0)
                await recv_until(ws, rec, is_json("utterance_end", utterance=2), timeout=10)
                # the session still works
                await ws.send(json.dumps({"type": "ping", "id": 1, "client_time_ms": 1.0}))
                await recv_until(ws, rec, is_json("pong"))

    asyncio.run(body())
