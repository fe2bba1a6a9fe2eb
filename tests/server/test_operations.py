"""The real avatar flow over REST, request-body bounds, the host's lifespan, the transport
plugin, build and stream bounds, expiry of sessions nobody connects to, and /metrics."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from websockets.asyncio.client import connect

from lipcore.default_plugins.websocket import StarletteWebSocketTransport
from lipcore.server import ServerSettings, create_app
from lipcore.testing import inline_plugin, testing_engine

from .conftest import (
    FAKE_AVATAR_ID,
    Received,
    RunningServer,
    is_json,
    make_tts,
    recv_one,
    recv_until,
    start_server,
    write_fake_avatar,
)

MK = {"avatar_id": FAKE_AVATAR_ID, "voice_id": "test"}


def _raw_request(srv: RunningServer, head: str, body: bytes = b"") -> bytes:
    """Send a request head (and part of a body) on a raw socket, never finish the body, and
    return what the server answers (it must answer without waiting for the rest)."""
    port = int(srv.url.rsplit(":", 1)[1].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        out = b""
        while b"\r\n\r\n" not in out or not out.rstrip().endswith(b"}"):
            part = sock.recv(65536)
            if not part:
                break
            out += part
    return out


def test_request_bodies_are_bounded_before_they_are_read(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: RunningServer = make_server(max_upload_bytes=50_000, max_request_bytes=10_000)
    # A declared size over the bound: 413 at once, without sending any body.
    answer = _raw_request(srv, "POST /avatarize-2d HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               "Content-Type: multipart/form-data; boundary=b\r\n"
                               "Content-Length: 1000000000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"50000 byte limit" in answer
    # A streamed (chunked) upload that never ends: 413 as soon as it passes the bound. The
    # body is a well-formed start of a file part, so the only thing wrong with it is its size
    # (pure filler could be refused as malformed multipart, 400, before the bound is passed).
    part = (b'--b\r\nContent-Disposition: form-data; name="hero_image"; filename="x.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n")
    chunks = [part + b"x" * (8192 - len(part))] + [b"x" * 8192] * 19  # 160 KB
    body = b"".join(b"%x\r\n" % len(c) + c + b"\r\n" for c in chunks)
    answer = _raw_request(srv, "POST /avatarize-2d HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               "Content-Type: multipart/form-data; boundary=b\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n", body)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "limit_exceeded"
    # JSON bodies have their own, smaller bound.
    with httpx.Client() as c:
        r = c.post(f"{srv.url}/session-2d", content=json.dumps({**MK, "pad": "x" * 20_000}),
                   headers={"content-type": "application/json"})
        assert r.status_code == 413 and "10000 byte limit" in r.json()["detail"]
        # ...and normal requests still work on the same server
        assert c.post(f"{srv.url}/session-2d", json=MK).status_code == 200


def test_real_photo_avatarized_over_rest_then_spoken_and_kept_across_restart(
    tmp_path: Path, grace_hopper_path: Path, face_model_path: Path
) -> None:
    """POST a real photo (MediaPipe face pipeline, real idle loop and sprites), get its
    assets, speak through a session, restart the server: the avatar is still there. A second
    build while one runs is refused with 429 (build_concurrency=1, no waiting room)."""
    data = tmp_path / "data"
    settings = ServerSettings(data_dir=data, idle_seconds=3.0, max_pending_builds=0)
    first = start_server(create_app(testing_engine(tts=make_tts()), settings))
    photo = grace_hopper_path.read_bytes()
    try:
        async def build() -> tuple[dict[str, Any], httpx.Response]:
            async with httpx.AsyncClient(timeout=300) as c:
                files = {"hero_image": ("grace.jpg", photo, "image/jpeg")}
                task = asyncio.create_task(c.post(f"{first.url}/avatarize-2d", files=files))
                await asyncio.sleep(0.5)
                busy = await c.post(f"{first.url}/avatarize-2d", files=files)
                r = await task
                assert r.status_code == 200, r.text
                return r.json(), busy

        av, busy = asyncio.run(build())
        assert busy.status_code == 429 and busy.json()["error"] == "build_busy"
        assert "retry" in busy.json()["detail"]
        aid = av["avatar_id"]
        assert aid.startswith("a_") and len(aid) > 20
        lip = av["lipsync_assets"]
        assert lip["type"] == "sprites" and lip["roi"]["w"] > 0 and lip["roi"]["h"] > 0
        assert 2.9 <= av["idle"]["seconds"] <= 5.1
        with httpx.Client() as c:
            idle = c.get(av["idle_url"])
            assert idle.status_code == 200 and idle.content[4:8] == b"ftyp"
            assert c.get(lip["mask_url"]).headers["content-type"] == "image/png"
            assert c.get(lip["atlas_url"]).status_code == 200
            s = c.post(f"{first.url}/session-2d", json={"avatar_id": aid, "voice_id": "test"})
            assert s.status_code == 200, s.text

        async def speak(ws_url: str) -> Received:
            rec = Received()
            async with connect(ws_url) as ws:
                _, hello = await recv_one(ws, rec)
                assert hello["lipsync"]["roi"] == lip["roi"]
                await ws.send('{"type": "speak", "text": "Guten Morgen"}')
                await recv_until(ws, rec, is_json("utterance_end"))
            return rec

        rec = asyncio.run(speak(s.json()["ws_url"]))
        assert rec.audio(1) and rec.json("visemes")
    finally:
        first.stop()
    second = start_server(create_app(testing_engine(tts=make_tts()),
                                     ServerSettings(data_dir=data)))
    try:
        with httpx.Client() as c:
            again = c.get(f"{second.url}/avatars/{aid}").json()
            assert again["lipsync_assets"]["roi"] == lip["roi"]
            assert c.get(again["idle_url"]).content == idle.content
            assert c.post(f"{second.url}/session-2d",
                          json={"avatar_id": aid, "voice_id": "test"}).status_code == 200
    finally:
        second.stop()


def test_host_lifespan_closes_sessions_and_stops_the_tts(tmp_path: Path) -> None:
    """Mounted into a plain Starlette host that runs the lipcore app's lifespan: on shutdown
    every session is closed and no TTS stream is left running."""
    data = tmp_path / "data"
    write_fake_avatar(data)
    tts = make_tts()
    inner = create_app(testing_engine(tts=tts), ServerSettings(data_dir=data))
    host = Starlette(routes=[Mount("/live", app=inner)],
                     lifespan=inner.router.lifespan_context)
    srv = start_server(host, prefix="/live")
    manager = inner.state.lipcore.sessions
    try:
        async def body() -> None:
            async with httpx.AsyncClient() as c:
                s = (await c.post(f"{srv.url}/session-2d", json={**MK, "tts": "realtime"})).json()
                assert s["ws_url"].startswith(srv.ws_base + "/ws/")
                rec = Received()
                async with connect(s["ws_url"]) as ws:
                    await recv_one(ws, rec)
                    await ws.send(json.dumps({"type": "speak", "text": "ein langer satz " * 20}))
                    await recv_until(ws, rec, lambda it: it[0] == "audio")
                    assert len(manager.sessions) == 1
                    await asyncio.to_thread(srv.stop)
                    with pytest.raises(Exception):  # noqa: B017 - closed, however uvicorn does it
                        while True:
                            await recv_one(ws, rec, timeout=5)

        asyncio.run(body())
    finally:
        srv.stop()
    assert manager.sessions == {}
    assert tts["realtime"].started == tts["realtime"].closed == 1


class RecordingTransport(StarletteWebSocketTransport):
    """A transport plugin of the test: the stock one, counting what it sends."""

    name = "recording"
    sent: ClassVar[list[str]] = []

    async def send_text(self, text: str) -> None:
        self.sent.append("text")
        await super().send_text(text)

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append("bytes")
        await super().send_bytes(data)


def test_transport_is_a_plugin(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_fake_avatar(data)
    engine = testing_engine(tts=make_tts(), plugins=[
        inline_plugin(transports={"recording": RecordingTransport}, name="test.transport")])
    srv = start_server(create_app(engine, ServerSettings(data_dir=data, transport="recording")))
    RecordingTransport.sent = []
    try:
        async def body() -> Received:
            async with httpx.AsyncClient() as c:
                s = (await c.post(f"{srv.url}/session-2d", json=MK)).json()
                rec = Received()
                async with connect(s["ws_url"]) as ws:
                    await recv_one(ws, rec)
                    await ws.send('{"type": "speak", "text": "Hallo"}')
                    await recv_until(ws, rec, is_json("utterance_end"))
                return rec

        rec = asyncio.run(body())
    finally:
        srv.stop()
    kinds = ["bytes" if it[0] == "audio" else "text" for it in rec.items]
    assert RecordingTransport.sent[: len(kinds)] == kinds and len(kinds) > 3


def test_unconnected_session_expires_and_streams_flush_when_idle(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: RunningServer = make_server(reconnect_grace_s=0.6, stream_idle_timeout_s=0.5)

    async def body() -> None:
        async with httpx.AsyncClient() as c:
            # nobody connects to this one: gone after the grace period
            lonely = (await c.post(f"{srv.url}/session-2d", json=MK)).json()
            s = (await c.post(f"{srv.url}/session-2d", json=MK)).json()
            rec = Received()
            async with connect(s["ws_url"]) as ws:
                await recv_one(ws, rec)
                # an LLM stream that goes quiet without text_end: spoken after the idle timeout
                await ws.send('{"type": "text_delta", "delta": "hallo welt "}')
                t0 = time.monotonic()
                _, end = await recv_until(ws, rec, is_json("utterance_end"), timeout=5)
                assert end["reason"] == "done" and time.monotonic() - t0 >= 0.45
                assert srv.tts["replay"].texts[-1] == "hallo welt"
                await asyncio.sleep(0.8)
                r = await c.get(f"{srv.url}/session-2d/{lonely['session_id']}")
                assert r.status_code == 410 and "expired" in r.json()["detail"]
                # the connected one lives on
                r = await c.get(f"{srv.url}/session-2d/{s['session_id']}")
                assert r.status_code == 200 and r.json()["connected"] is True

    asyncio.run(body())


def test_metrics_report_server_added_latency(server: RunningServer) -> None:
    async def body() -> None:
        async with httpx.AsyncClient() as c:
            s = (await c.post(f"{server.url}/session-2d", json={**MK, "tts": "realtime"})).json()
            rec = Received()
            async with connect(s["ws_url"]) as ws:
                await recv_one(ws, rec)
                await ws.send('{"type": "speak", "text": "eins zwei drei"}')
                await recv_until(ws, rec, is_json("utterance_end"))
            m = (await c.get(f"{server.url}/metrics")).json()
            n_audio = len(rec.audio(1))
            assert m["latency"]["count"] == n_audio == m["lag"]["count"]
            # one session on loopback: a few ms at most, and the lag includes the added part
            assert 0 <= m["latency"]["p50_ms"] < 50
            assert m["lag"]["p50_ms"] >= m["latency"]["p50_ms"] - 0.01

    asyncio.run(body())


def test_avatar_and_voice_lists(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: RunningServer = make_server(api_key="k" * 32)
    key = {"x-api-key": "k" * 32}
    # both lists sit behind the key: avatar ids are the capability to their files
    assert httpx.get(f"{srv.url}/avatars").status_code == 401
    assert httpx.get(f"{srv.url}/voices").status_code == 401
    avatars = httpx.get(f"{srv.url}/avatars", headers=key).json()["avatars"]
    assert [a["avatar_id"] for a in avatars] == [FAKE_AVATAR_ID]
    assert avatars[0]["idle_url"].startswith(srv.url + "/avatars/")
    body = httpx.get(f"{srv.url}/voices", headers=key).json()
    assert body["tts"] == "replay" and body["voices"]
    assert {"id", "name", "language"} <= set(body["voices"][0])
    other = httpx.get(f"{srv.url}/voices", params={"tts": "failing"}, headers=key).json()
    assert other["tts"] == "failing"
    unknown = httpx.get(f"{srv.url}/voices", params={"tts": "nope"}, headers=key)
    assert unknown.status_code in (400, 404, 422) and "nope" in unknown.text
