"""Every bound gives a clear 4xx (REST) or error event (WebSocket) with a reason."""

from __future__ import annotations

import asyncio
import io

import httpx
import numpy as np
import pytest
from PIL import Image
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from .conftest import FAKE_AVATAR_ID, Received, RunningServer, is_json, recv_one, recv_until

MK = {"avatar_id": FAKE_AVATAR_ID, "voice_id": "test"}


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_upload_bounds(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: RunningServer = make_server(max_upload_bytes=50_000, max_image_pixels=100_000)
    with httpx.Client(timeout=30) as c:
        big = b"\xff\xd8" + b"\0" * 60_000
        r = c.post(f"{srv.url}/avatarize-2d", files={"hero_image": ("a.jpg", big)})
        assert r.status_code == 413 and "50000 byte upload limit" in r.json()["detail"]
        r = c.post(f"{srv.url}/avatarize-2d", files={"hero_image": ("a.png", _png(400, 300))})
        assert r.status_code == 413 and "megapixel" in r.json()["detail"]
        r = c.post(f"{srv.url}/avatarize-2d", files={"hero_image": ("a.txt", b"not an image")})
        assert r.status_code == 422 and r.json()["error"]
        r = c.post(f"{srv.url}/avatarize-2d", data={"backend": "sprites"})
        assert r.status_code == 422  # hero_image missing
        r = c.post(f"{srv.url}/avatarize-2d", files={"hero_image": ("a.png", _png(64, 48))},
                   data={"backend": "no-such-backend"})
        assert r.status_code == 422 and r.json()["error"] == "plugin_not_found"
        assert "no-such-backend" in r.json()["detail"]


def test_rest_bad_inputs(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: RunningServer = make_server(max_text_chars=100, max_queued_utterances=2,
                                     max_sessions=2)
    with httpx.Client(timeout=30) as c:
        r = c.post(f"{srv.url}/session-2d", json={"avatar_id": "a_missing_avatar",
                                                  "voice_id": "test"})
        assert r.status_code == 404 and r.json()["error"] == "avatar_not_found"
        r = c.post(f"{srv.url}/session-2d", json={"avatar_id": "../../etc", "voice_id": "test"})
        assert r.status_code == 404
        r = c.post(f"{srv.url}/session-2d", json={**MK, "voice_id": "klingon"})
        assert r.status_code == 404 and r.json()["error"] == "unknown_voice"
        r = c.post(f"{srv.url}/session-2d", json={**MK, "tts": "nope"})
        assert r.status_code == 422 and r.json()["error"] == "plugin_not_found"
        r = c.post(f"{srv.url}/session-2d", json={**MK, "extra": 1})
        assert r.status_code == 422
        s = c.post(f"{srv.url}/session-2d", json={**MK, "tts": "realtime"}).json()
        sid = s["session_id"]
        r = c.post(f"{srv.url}/session-2d/{sid}/speak", json={"text": "hallo"})
        assert r.status_code == 409 and r.json()["error"] == "not_connected"
        r = c.post(f"{srv.url}/session-2d/s_unknown/speak", json={"text": "hallo"})
        assert r.status_code == 404 and r.json()["error"] == "session_not_found"
        c.post(f"{srv.url}/session-2d", json=MK)
        r = c.post(f"{srv.url}/session-2d", json=MK)
        assert r.status_code == 429 and r.json()["error"] == "too_many_sessions"
        assert "max_sessions=2" in r.json()["detail"]
        r = c.get(f"{srv.url}/avatars/{FAKE_AVATAR_ID}/files/../../manifest.json")
        assert r.status_code == 404
        r = c.get(f"{srv.url}/avatars/{FAKE_AVATAR_ID}/files/nope.png")
        assert r.status_code == 404

    async def ws_part() -> None:
        async with httpx.AsyncClient() as c, connect(s["ws_url"]) as ws:
            rec = Received()
            await recv_one(ws, rec)
            r = await c.post(f"{srv.url}/session-2d/{sid}/speak", json={"text": "x" * 101})
            assert r.status_code == 413 and "limit is 100" in r.json()["detail"]
            r = await c.post(f"{srv.url}/session-2d/{sid}/speak", json={"text": "  <b></b> "})
            assert r.status_code == 422 and r.json()["error"] == "empty_text"
            # queue bound: one speaking + 2 queued, the next is refused
            codes = []
            for _ in range(6):
                r = await c.post(f"{srv.url}/session-2d/{sid}/speak",
                                 json={"text": "ein recht langer satz " * 4})
                codes.append(r.status_code)
            assert 429 in codes
            assert codes.index(429) >= 2
            await c.post(f"{srv.url}/session-2d/{sid}/stop")

    asyncio.run(ws_part())


def test_ws_bad_messages(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: RunningServer = make_server(max_message_bytes=1000, max_invalid_messages=6,
                                     max_stream_chars=30)

    async def body() -> None:
        async with httpx.AsyncClient() as c:
            s = (await c.post(f"{srv.url}/session-2d", json=MK)).json()
            rec = Received()
            async with connect(s["ws_url"]) as ws:
                await recv_one(ws, rec)
                for bad, code, words in [
                    ("not json", "bad_message", "not valid JSON"),
                    ('{"type": "dance"}', "bad_message", "invalid message"),
                    ('{"type": "speak"}', "bad_message", "text"),
                    ('{"type": "speak", "text": "' + "x" * 2000 + '"}', "message_too_big",
                     "1000 byte limit"),
                ]:
                    await ws.send(bad)
                    _, err = await recv_until(ws, rec, is_json("error"))
                    assert err["code"] == code and words in err["message"], err
                await ws.send(b"\x01\x02")
                _, err = await recv_until(ws, rec, is_json("error"))
                assert "binary" in err["message"]
                # the session is still usable
                await ws.send('{"type": "text_delta", "delta": "' + "a" * 20 + '"}')
                await ws.send('{"type": "text_delta", "delta": "' + "b" * 20 + '"}')
                _, err = await recv_until(ws, rec, is_json("error"))
                assert err["code"] == "limit_exceeded" and "limit is 30" in err["message"]
                await ws.send('{"type": "text_end"}')
                await ws.send('{"type": "ping", "id": "x", "client_time_ms": 1}')
                await recv_until(ws, rec, is_json("pong"))
                # the 6th invalid message closes the socket with 4400
                await ws.send("{}")
                with pytest.raises(ConnectionClosed) as exc:
                    while True:
                        await recv_one(ws, rec)
                assert exc.value.rcvd is not None and exc.value.rcvd.code == 4400

    asyncio.run(body())


def test_idle_timeout_expires_session(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: RunningServer = make_server(session_idle_timeout_s=0.6)

    async def body() -> None:
        async with httpx.AsyncClient() as c:
            s = (await c.post(f"{srv.url}/session-2d", json=MK)).json()
            rec = Received()
            async with connect(s["ws_url"]) as ws:
                await recv_one(ws, rec)
                with pytest.raises(ConnectionClosed) as exc:
                    await recv_one(ws, rec, timeout=5)
                assert exc.value.rcvd is not None and exc.value.rcvd.code == 4410
                assert "idle" in exc.value.rcvd.reason
            r = await c.get(f"{srv.url}/session-2d/{s['session_id']}/usage")
            assert r.status_code == 410 and "expired" in r.json()["detail"]
            async with connect(s["ws_url"]) as ws:
                with pytest.raises(ConnectionClosed) as exc:
                    await ws.recv()
                assert exc.value.rcvd is not None and exc.value.rcvd.code == 4410

    asyncio.run(body())
