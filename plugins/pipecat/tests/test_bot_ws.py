"""examples/pipecat_bot.py served by uvicorn on loopback, a WebSocket client speaking lipcore's
protocol to it as lipcore's web client does: Pipecat's FastAPI WebSocket transport, the
serializer, the scripted LLM and real espeak-ng speech, end to end. Every message is checked
against lipcore's protocol models."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from lipcore.server.protocol import (
    AUDIO_VISEMES_KIND,
    split_audio_visemes,
    unpack_frame,
    validate_server_message,
)
from lipcore.testing import write_test_avatar

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "tests" / "clients"))

pytestmark = pytest.mark.slow

AVATAR = "a_prebuilt_test_avatar"


@pytest.fixture(scope="module")
def bot_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from fixture_server import serve_in_thread
    from pipecat_bot import create_bot_app

    data = tmp_path_factory.mktemp("bot-data")
    write_test_avatar(data, AVATAR)
    with serve_in_thread(create_bot_app(data, greeting=None)) as url:
        yield url


def session(url: str, **body: Any) -> dict[str, Any]:
    r = httpx.post(f"{url}/session-2d", json={"avatar_id": AVATAR, "voice_id": "en-us", **body})
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


async def receive(ws: Any, until: Any, timeout: float = 15.0) -> list[Any]:
    """Messages (dicts, or (header, visemes event or None, pcm) for binary) until ``until``."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        data = await asyncio.wait_for(ws.recv(), deadline - time.monotonic())
        if isinstance(data, str):
            msg = json.loads(data)
            validate_server_message(msg)
            out.append(msg)
        else:
            h, payload = unpack_frame(data)
            event = None
            if h.kind == AUDIO_VISEMES_KIND:
                text, payload = split_audio_visemes(payload)
                event = json.loads(text)
                validate_server_message(event)
            out.append((h, event, payload))
        if until(out[-1]):
            return out


def is_type(t: str) -> Any:
    return lambda m: isinstance(m, dict) and m["type"] == t


def test_a_turn_end_to_end(bot_url: str) -> None:
    async def body() -> None:
        s = session(bot_url)
        async with websockets.connect(s["ws_url"] + "?visemes=inline") as ws:
            hello = json.loads(await ws.recv())
            validate_server_message(hello)
            assert hello["type"] == "hello" and hello["viseme_events"] == "inline"
            assert hello["lipsync"]["type"] == "sprites" and hello["lipsync"]["atlas_url"]
            t0 = time.monotonic()
            await ws.send(json.dumps({"type": "speak", "text": "How are you?"}))
            msgs = await receive(ws, is_type("utterance_end"))
            first_audio = None
            start = msgs[0]
            assert start["type"] == "utterance_start" and start["utterance"] == 1
            assert start["text"].startswith("You said")
            audio = [m for m in msgs if isinstance(m, tuple)]
            # Contiguous audio on the utterance's timeline, each chunk where the last ended.
            pts = 0.0
            for h, _, pcm in audio:
                assert h.utterance == 1 and h.pts_ms == pytest.approx(pts, abs=1e-6)
                pts += len(pcm) / 2 / hello["audio"]["sample_rate"] * 1000
            end = msgs[-1]
            # The reply is ~2 s of speech; the client gets all of it (+ < one 40 ms chunk of
            # the transport's padding).
            assert 1500 < end["duration_ms"] <= pts <= end["duration_ms"] + 41
            frames = [f for _, e, _ in audio if e and not e.get("provisional")
                      for f in e["frames"]]
            frames += [f for m in msgs if isinstance(m, dict) and m["type"] == "visemes"
                       and not m.get("provisional") for f in m["frames"]]
            fp = sorted(f["pts_ms"] for f in frames)
            assert len(fp) > 0.9 * end["duration_ms"] / 1000 * 30
            assert any(sum(f["weights"].values()) > 0.5 for f in frames)
            first_audio = next(i for i, m in enumerate(msgs) if isinstance(m, tuple))
            assert first_audio == 1  # right after utterance_start
            # Pipecat's transport paces audio at about real time: the end comes when the
            # sound has (nearly) been sent, not at once.
            assert time.monotonic() - t0 > 0.5 * end["duration_ms"] / 1000

    asyncio.run(body())


def test_stop_mid_sentence_and_garbage(bot_url: str) -> None:
    async def body() -> None:
        s = session(bot_url)
        async with websockets.connect(s["ws_url"] + "?visemes=batched") as ws:
            hello = json.loads(await ws.recv())
            assert hello["viseme_events"] == "batched"
            await ws.send(json.dumps({"type": "ping", "id": 7, "client_time_ms": 1.5}))
            pong = (await receive(ws, is_type("pong")))[-1]
            assert pong["id"] == 7 and pong["client_time_ms"] == 1.5
            long = "one two three four five six seven eight nine ten eleven twelve thirteen"
            await ws.send(json.dumps({"type": "speak", "text": long}))
            got = await receive(ws, lambda m: isinstance(m, tuple) and m[0].pts_ms >= 600)
            assert got[0]["type"] == "utterance_start"
            await ws.send(json.dumps({"type": "stop"}))
            msgs = await receive(ws, is_type("stop"))
            stop = msgs[-1]
            assert stop["utterance"] == 1 and stop["reason"] == "client"
            rate = hello["audio"]["sample_rate"]
            audio = [m for m in [*got, *msgs] if isinstance(m, tuple)]
            sent = audio[-1][0].pts_ms + len(audio[-1][2]) / 2 / rate * 1000
            assert stop["at_pts_ms"] == pytest.approx(sent, abs=0.2)
            # Nothing of utterance 1 after its stop; garbage is answered, the session lives.
            for bad in ("{not json", '{"type":"dance"}', '{"type":"speak","text":""}'):
                await ws.send(bad)
            await ws.send(b"\x01\x02")
            await ws.send(json.dumps({"type": "speak", "text": "Yes?"}))
            later = await receive(ws, is_type("utterance_end"))
            errors = [m for m in later if isinstance(m, dict) and m["type"] == "error"]
            assert [e["code"] for e in errors] == ["bad_message", "bad_message", "bad_message",
                                                   "bad_message"]
            assert not [m for m in later if isinstance(m, tuple) and m[0].utterance == 1]
            assert not [m for m in later if isinstance(m, dict)
                        and m.get("utterance") == 1]
            assert later[-1]["utterance"] == 2

    asyncio.run(body())


def test_barge_in_replaces_the_answer(bot_url: str) -> None:
    async def body() -> None:
        s = session(bot_url)
        async with websockets.connect(s["ws_url"] + "?visemes=inline") as ws:
            json.loads(await ws.recv())
            long = "one two three four five six seven eight nine ten eleven twelve thirteen"
            await ws.send(json.dumps({"type": "speak", "text": long}))
            await receive(ws, lambda m: isinstance(m, tuple) and m[0].pts_ms >= 500)
            await ws.send(json.dumps({"type": "speak", "text": "Stop, listen.",
                                      "barge_in": True}))
            msgs = await receive(ws, is_type("utterance_end"))
            stop = next(m for m in msgs if isinstance(m, dict) and m["type"] == "stop")
            assert stop["utterance"] == 1 and stop["reason"] == "barge_in"
            k = msgs.index(stop)
            # Nothing of utterance 1 after its stop; the new answer is utterance 2.
            assert not [m for m in msgs[k + 1:] if (isinstance(m, tuple) and m[0].utterance == 1)
                        or (isinstance(m, dict) and m.get("utterance") == 1)]
            start = next(m for m in msgs[k:] if isinstance(m, dict)
                         and m["type"] == "utterance_start")
            assert start["utterance"] == 2 and start["text"] == "You said: Stop, listen."
            assert msgs[-1]["utterance"] == 2

    asyncio.run(body())


def test_unknown_session_and_avatar(bot_url: str) -> None:
    r = httpx.post(f"{bot_url}/session-2d", json={"avatar_id": "nope", "voice_id": "en-us"})
    assert r.status_code == 404 and "nope" in r.json()["detail"]

    async def body() -> None:
        async with websockets.connect(bot_url.replace("http", "ws") + "/pipecat/nope") as ws:
            with pytest.raises(websockets.ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 4404

    asyncio.run(body())
