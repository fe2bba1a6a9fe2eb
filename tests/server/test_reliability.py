"""Barge-in under load, reconnect, slow clients, TTS failure, restart persistence, mounting,
asset serving, and the vectors agreeing with the server."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from lipcore.server import ServerSettings, create_app
from lipcore.server.protocol import (
    AUDIO_VISEMES_KIND,
    split_audio_visemes,
    unpack_frame,
)
from lipcore.server.vectors import vector_texts
from lipcore.testing import ReplayTTSSource, testing_engine

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
LONG = "Das ist ein ziemlich langer Satz, der eine ganze Weile dauert, bis er fertig ist. " * 3


def _utterance_of(item: tuple[Any, ...]) -> int | None:
    if item[0] == "audio":
        return int(item[1].utterance)
    return item[1].get("utterance")


def test_barge_in_under_load(server: RunningServer) -> None:
    """40 sessions speak at once (real-time and as-fast-as-possible TTS); each stops or barges
    in at a random moment. After each `stop`, nothing of the stopped utterance arrives."""

    # Correctness, not speed: 40 sessions share this process with the server, and a loaded
    # CI machine may take a while, so each wait below may last up to a minute.
    def until(ws: Any, rec: Received, pred: Any) -> Any:
        return recv_until(ws, rec, pred, timeout=60)

    async def one(c: httpx.AsyncClient, i: int) -> None:
        tts = "realtime" if i % 2 else "replay"
        s = (await c.post(f"{server.url}/session-2d", json={**MK, "tts": tts})).json()
        rec = Received()
        async with connect(s["ws_url"]) as ws:
            await recv_one(ws, rec)
            await ws.send(json.dumps({"type": "speak", "text": LONG}))
            await ws.send(json.dumps({"type": "speak", "text": "danach in der Schlange"}))
            await until(ws, rec, lambda it: it[0] == "audio")
            await asyncio.sleep(random.uniform(0.0, 0.3))
            if i % 3 == 0:
                await ws.send(json.dumps({"type": "speak", "text": "Moment!", "barge_in": True}))
            elif i % 3 == 1:
                await ws.send('{"type": "stop"}')
            else:
                r = await c.post(f"{server.url}/session-2d/{s['session_id']}/stop")
                assert r.status_code == 200
            _, stop = await until(ws, rec, is_json("stop"))
            # drain: a ping answered means everything queued before it has arrived
            await ws.send('{"type": "ping", "id": 1, "client_time_ms": 0}')
            await until(ws, rec, is_json("pong"))
            ended = is_json("utterance_end", utterance=stop["utterance"] + 1)
            if i % 3 == 0 and not any(ended(it) for it in rec.items):  # may precede the pong
                await until(ws, rec, ended)
            await asyncio.sleep(0.2)
            await ws.send('{"type": "ping", "id": 2, "client_time_ms": 0}')
            await until(ws, rec, is_json("pong", id=2))
        idx = next(k for k, it in enumerate(rec.items) if it[0] == "json" and
                   it[1]["type"] == "stop")
        stopped = stop["utterance"]
        assert stopped >= 1
        after = [it for it in rec.items[idx + 1:] if _utterance_of(it) is not None]
        leaked = [it for it in after if _utterance_of(it) <= stopped]
        assert not leaked, f"session {i}: {len(leaked)} messages of a stopped utterance after stop"
        if i % 3 == 0:
            assert rec.json("utterance_start")[-1]["text"] == "Moment!"
        elif stopped == 1:  # the queued utterance was dropped too
            assert all(m["text"] != "danach in der Schlange" for m in rec.json("utterance_start"))
        else:
            # An as-fast-as-possible TTS may have sent the long utterance in full before the
            # stop arrived (a loaded machine delays the stop): then the stop hit the next one.
            assert stopped == 2 and rec.json("utterance_end")[0]["utterance"] == 1
        # the stop says how far the server had sent, on the audio timeline
        sent = [h.pts_ms + len(p) / 32.0 for h, p in rec.audio(stopped)]
        assert stop["at_pts_ms"] == pytest.approx(max(sent), abs=0.2)
        assert 100 <= stop["ramp_ms"] <= 200

    async def body() -> None:
        async with httpx.AsyncClient(timeout=30) as c:
            await asyncio.gather(*(one(c, i) for i in range(40)))

    asyncio.run(body())


def test_tts_failure_mid_utterance(server: RunningServer) -> None:
    async def body() -> None:
        async with httpx.AsyncClient() as c:
            s = (await c.post(f"{server.url}/session-2d", json={**MK, "tts": "failing"})).json()
            rec = Received()
            async with connect(s["ws_url"]) as ws:
                await recv_one(ws, rec)
                await ws.send(json.dumps({"type": "speak", "text": LONG}))
                _, err = await recv_until(ws, rec, is_json("error"))
                _, stop = await recv_until(ws, rec, is_json("stop"))
                assert err["code"] == "tts_error" and err["utterance"] == 1
                assert "dropped" in err["message"]
                assert stop["reason"] == "error" and stop["utterance"] == 1
                assert len(rec.audio(1)) == 3  # what the TTS gave before failing went out
                assert not rec.json("utterance_end")
                # the session stays usable
                await ws.send(json.dumps({"type": "speak", "text": "ja"}))
                _, end = await recv_until(ws, rec, is_json("utterance_end"))
                assert end["utterance"] == 2
            u = (await c.get(f"{server.url}/session-2d/{s['session_id']}/usage")).json()
            assert u["errors"] == 1 and u["utterances"] == 2

    asyncio.run(body())


async def _speak_then_drop(c: httpx.AsyncClient, url: str, tts: str) -> dict[str, Any]:
    """Create a session on ``tts``, connect, speak LONG and drop the connection at its first
    audio (mid-utterance); returns the session (``session_id``, ``ws_url``)."""
    s: dict[str, Any] = (await c.post(f"{url}/session-2d", json={**MK, "tts": tts})).json()
    rec = Received()
    async with connect(s["ws_url"]) as ws:
        await recv_one(ws, rec)
        await ws.send(json.dumps({"type": "speak", "text": LONG}))
        await recv_until(ws, rec, lambda it: it[0] == "audio")
    return s


def test_reconnect_within_grace_resumes(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: RunningServer = make_server(reconnect_grace_s=1.0)

    async def body() -> None:
        async with httpx.AsyncClient() as c:
            s = await _speak_then_drop(c, srv.url, "realtime")  # dropped mid-utterance
            # come back
            rec2 = Received()
            async with connect(s["ws_url"]) as ws:
                _, hello = await recv_one(ws, rec2)
                assert hello["type"] == "hello" and hello["resumed"] is True
                await asyncio.sleep(0.3)
                await ws.send('{"type": "ping", "id": 1, "client_time_ms": 0}')
                await recv_until(ws, rec2, is_json("pong"))
                # the utterance in flight was cancelled, not replayed
                assert not rec2.audio() and not rec2.json("utterance_start")
                await ws.send(json.dumps({"type": "speak", "text": "weiter"}))
                _, st = await recv_until(ws, rec2, is_json("utterance_start"))
                assert st["utterance"] == 2  # numbering continues
                # a second connection replaces the first (4409)
                async with connect(s["ws_url"]) as ws2:
                    _, h2 = await recv_one(ws2, Received())
                    assert h2["resumed"] is True
                    with pytest.raises(ConnectionClosed) as exc:
                        while True:
                            await recv_one(ws, rec2)
                    assert exc.value.rcvd is not None and exc.value.rcvd.code == 4409
            # after the grace period the session is gone
            await asyncio.sleep(1.6)
            async with connect(s["ws_url"]) as ws:
                with pytest.raises(ConnectionClosed) as exc:
                    await ws.recv()
                assert exc.value.rcvd is not None and exc.value.rcvd.code == 4410
            r = await c.post(f"{srv.url}/session-2d/{s['session_id']}/stop")
            assert r.status_code == 410

    asyncio.run(body())


class _SlowToCloseTTS(ReplayTTSSource):
    """Real-time speech whose stream takes 0.4 s to wind down when cancelled, as a vendor's
    socket does when it closes."""

    def synthesize(self, text: Any, *, voice: str, options: Any = None) -> Any:
        inner = super().synthesize(text, voice=voice, options=options)

        async def run() -> Any:
            try:
                async for chunk in inner:
                    yield chunk
            finally:
                await asyncio.sleep(0.4)

        return run()


def test_reconnect_while_the_old_connection_is_still_winding_down(make_server) -> None:  # type: ignore[no-untyped-def]
    """The client drops and comes back at once, while the server is still cancelling the
    utterance of the dropped connection (its TTS takes a while to close): the new connection is
    served (hello, pong, new speech), and nothing of the cancelled utterance reaches it."""
    tts = {**make_tts(), "slow": _SlowToCloseTTS(realtime=True)}
    srv: RunningServer = make_server(reconnect_grace_s=5.0, tts=tts)

    async def body() -> None:
        async with httpx.AsyncClient() as c:
            s = await _speak_then_drop(c, srv.url, "slow")
            rec2 = Received()
            async with connect(s["ws_url"]) as ws:  # at once: the old one is still closing
                _, hello = await recv_until(ws, rec2, is_json("hello"), timeout=5)
                assert hello["resumed"] is True
                await ws.send('{"type": "ping", "id": 1, "client_time_ms": 0}')
                await recv_until(ws, rec2, is_json("pong"), timeout=5)
                await ws.send(json.dumps({"type": "speak", "text": "weiter"}))
                _, st = await recv_until(ws, rec2, is_json("utterance_start"), timeout=5)
                assert st["utterance"] == 2
                await recv_until(ws, rec2, is_json("utterance_end"), timeout=10)
                assert rec2.audio(2)
                leaked = [it for it in rec2.items if _utterance_of(it) == 1]
                assert not leaked, leaked

    asyncio.run(body())


class _RawClient:
    """A WebSocket client on a plain socket with a tiny receive buffer, that reads only when
    asked: a client that stops reading for a while, exactly (a library client keeps reading in
    the background)."""

    def __init__(self, base_url: str, ws_url: str) -> None:
        port = int(base_url.rsplit(":", 1)[1])
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        path = ws_url.split(f":{port}", 1)[1]
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self.buf += self.sock.recv(4096)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send_text(self, text: str) -> None:
        data = text.encode()
        assert len(data) < 65536
        size = bytes([0x80 | len(data)]) if len(data) < 126 else bytes([0x80 | 126]) + (
            len(data).to_bytes(2, "big"))
        self.sock.sendall(b"\x81" + size + b"\0\0\0\0" + data)  # masked with a zero key

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed"
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self) -> str | bytes:
        b0, b1 = self._take(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(self._take(2), "big")
        elif n == 127:
            n = int.from_bytes(self._take(8), "big")
        payload = self._take(n)
        assert b0 & 0x0F in (1, 2), f"opcode {b0 & 0x0F}"
        return payload.decode() if b0 & 0x0F == 1 else payload


def test_stop_reports_what_the_client_gets_when_audio_was_queued(make_server) -> None:  # type: ignore[no-untyped-def]
    """A stop while audio waits in the send queue (the client is not reading): the queued
    audio is dropped, and the stop's ``at_pts_ms`` is where the audio the client does get
    ends, not where the TTS had got to."""
    srv: RunningServer = make_server(max_text_chars=5000)
    s = httpx.post(f"{srv.url}/session-2d", json={**MK, "tts": "bulk"}).json()
    session = srv.app.state.lipcore.sessions.get(s["session_id"])
    client = _RawClient(srv.url, s["ws_url"])
    assert json.loads(client.recv())["type"] == "hello"
    client.send_text(json.dumps({"type": "speak", "text": LONG * 19}))
    for _ in range(400):  # not reading: wait until audio queues in the server
        outbox = session.outbox
        if outbox is not None and outbox.queued_bytes > 100_000:  # > 3 s of audio
            break
        time.sleep(0.025)
    else:
        raise AssertionError("the server never had to queue audio")
    assert httpx.post(f"{srv.url}/session-2d/{s['session_id']}/stop").status_code == 200
    ends: list[float] = []
    while True:
        msg = client.recv()
        if isinstance(msg, bytes):
            header, payload = unpack_frame(msg)
            if header.kind == AUDIO_VISEMES_KIND:
                payload = split_audio_visemes(payload)[1]
            ends.append(header.pts_ms + len(payload) / 32.0)
            continue
        event = json.loads(msg)
        if event["type"] == "stop":
            break
    client.sock.close()
    assert ends, "no audio arrived before the stop"
    assert event["at_pts_ms"] == pytest.approx(max(ends), abs=0.2)


def test_slow_client_dropped_with_reason(make_server) -> None:  # type: ignore[no-untyped-def]
    """A client that stops reading: the server's queue stays bounded, viseme messages are
    dropped first, and the client is disconnected with 4408 "client too slow"."""
    srv: RunningServer = make_server(send_queue_max_messages=64, send_queue_max_bytes=200_000,
                                     send_timeout_s=1.0, max_text_chars=5000)

    async def body() -> None:
        async with httpx.AsyncClient() as c:
            s = (await c.post(f"{srv.url}/session-2d", json={**MK, "tts": "bulk"})).json()
            sid = s["session_id"]
            # A raw socket with a tiny receive buffer that does the WebSocket handshake and
            # then never reads again.
            client = _RawClient(srv.url, s["ws_url"])
            status: dict[str, Any] = {}
            session = srv.app.state.lipcore.sessions.get(sid)
            peak_bytes = peak_msgs = 0
            # keep it talking (4800 characters ≈ 6 minutes of audio a time) until the kernel's
            # socket buffers are full and the server's sends block
            for _ in range(150):
                status = (await c.get(f"{srv.url}/session-2d/{sid}")).json()
                if not status["connected"]:
                    break
                if status["queued_utterances"] < 2:
                    await c.post(f"{srv.url}/session-2d/{sid}/speak", json={"text": LONG * 19})
                outbox = session.outbox  # what the server holds for this client
                if outbox is not None:
                    peak_bytes = max(peak_bytes, outbox.queued_bytes)
                    peak_msgs = max(peak_msgs, len(outbox))
                await asyncio.sleep(0.1)
            assert status["connected"] is False
            # memory per session stays bounded: the send queue never grew past its limits
            assert 0 < peak_bytes <= 200_000 and peak_msgs <= 64
            assert status["last_close"]["code"] == 4408
            assert "client too slow" in status["last_close"]["reason"]
            u = (await c.get(f"{srv.url}/session-2d/{sid}/usage")).json()
            assert u["dropped_viseme_messages"] > 0
            client.sock.close()
            # the session survives: a new connection resumes it
            async with connect(s["ws_url"]) as ws3:
                _, hello = await recv_one(ws3, Received())
                assert hello["resumed"] is True

    asyncio.run(body())


def test_avatars_survive_restart_and_assets(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_fake_avatar(data)
    first = start_server(create_app(testing_engine(tts=make_tts()), ServerSettings(data_dir=data)))
    try:
        a1 = httpx.get(f"{first.url}/avatars/{FAKE_AVATAR_ID}").json()
    finally:
        first.stop()
    second = start_server(create_app(testing_engine(tts=make_tts()),
                                     ServerSettings(data_dir=data)))
    try:
        with httpx.Client() as c:
            a2 = c.get(f"{second.url}/avatars/{FAKE_AVATAR_ID}").json()
            assert a2["avatar_id"] == a1["avatar_id"] == FAKE_AVATAR_ID
            assert a2["lipsync_assets"]["mask_url"].endswith("/mask_mouth.png")
            assert a2["lipsync_assets"]["roi"] == {"x": 46, "y": 60, "w": 36, "h": 22}
            assert c.post(f"{second.url}/session-2d", json=MK).status_code == 200
            # the idle video: caching headers, ETag revalidation, range requests
            url = a2["idle_url"]
            full = c.get(url)
            assert full.status_code == 200 and full.headers["content-type"] == "video/mp4"
            assert "immutable" in full.headers["cache-control"]
            assert full.headers["accept-ranges"] == "bytes"
            etag = full.headers["etag"]
            assert c.get(url, headers={"if-none-match": etag}).status_code == 304
            part = c.get(url, headers={"range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == full.content[100:200]
            assert part.headers["content-range"] == f"bytes 100-199/{len(full.content)}"
            assert full.content[4:8] == b"ftyp"
    finally:
        second.stop()


def test_mounted_under_a_prefix(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_fake_avatar(data)
    host = FastAPI()

    @host.get("/own")
    def own() -> dict[str, str]:
        return {"host": "yes"}

    host.mount("/avatar-api", create_app(testing_engine(tts=make_tts()),
                                         ServerSettings(data_dir=data)))
    srv = start_server(host, prefix="/avatar-api")
    try:
        async def body() -> None:
            async with httpx.AsyncClient() as c:
                assert (await c.get(srv.url.replace("/avatar-api", "/own"))).json() == {
                    "host": "yes"}
                s = (await c.post(f"{srv.url}/session-2d", json=MK)).json()
                assert s["ws_url"].startswith(srv.ws_base + "/ws/")
                av = (await c.get(f"{srv.url}/avatars/{FAKE_AVATAR_ID}")).json()
                assert av["idle_url"].startswith(srv.url + "/avatars/")
                assert (await c.get(av["idle_url"])).status_code == 200
                rec = Received()
                async with connect(s["ws_url"]) as ws:
                    _, hello = await recv_one(ws, rec)
                    assert hello["lipsync"]["mask_url"].startswith(srv.url + "/avatars/")
                    await ws.send('{"type": "speak", "text": "gemountet"}')
                    await recv_until(ws, rec, is_json("utterance_end"))
                assert (await c.get(f"{srv.url}/openapi.json")).status_code == 200

        asyncio.run(body())
    finally:
        srv.stop()


def test_openapi_and_health(server: RunningServer) -> None:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    for path in ("/avatarize-2d", "/session-2d", "/session-2d/{session_id}/speak",
                 "/session-2d/{session_id}/stop", "/session-2d/{session_id}/usage",
                 "/avatars/{avatar_id}", "/healthz"):
        assert path in spec["paths"], path
    h = httpx.get(f"{server.url}/healthz").json()
    assert h["ok"] is True and h["sessions"] == 0


def test_vectors_are_current() -> None:
    root = Path(__file__).resolve().parents[1] / "vectors"
    for name, text in vector_texts().items():
        assert (root / name).read_text(encoding="utf-8") == text, (
            f"tests/vectors/{name} is stale: python -m lipcore.server.vectors tests/vectors")


def test_replay_source_realtime_pace() -> None:
    async def body() -> None:
        src = ReplayTTSSource(realtime=True, first_audio_ms=100)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        chunks = []
        async for ch in src.synthesize("eins zwei", voice="test"):
            chunks.append((loop.time() - t0, ch))
        first_t, _first = chunks[0]
        assert 0.09 < first_t < 0.2
        last_t, last = chunks[-1]
        assert last_t == pytest.approx(0.1 + last.pts_ms / 1000, abs=0.05)
        assert last.final and src.closed == 1

    asyncio.run(body())
