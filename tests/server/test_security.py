"""Auth, session isolation, and secrets never leaking into logs or responses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from lipcore.errors import LipcoreError
from lipcore.server.settings import check_bind, is_loopback

from .conftest import FAKE_AVATAR_ID, Received, RunningServer, is_json, recv_one, recv_until

KEY = "k-3f9a1c77-this-is-the-test-api-key-0d2e"


def test_rest_requires_the_key_when_configured(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: RunningServer = make_server(api_key=KEY)
    body = {"avatar_id": FAKE_AVATAR_ID, "voice_id": "test"}
    with httpx.Client() as c:
        r = c.post(f"{srv.url}/session-2d", json=body)
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert "X-API-Key" in r.json()["detail"]
        r = c.post(f"{srv.url}/session-2d", json=body, headers={"x-api-key": KEY + "x"})
        assert r.status_code == 401
        r = c.post(f"{srv.url}/session-2d", json=body, headers={"x-api-key": KEY[:-1]})
        assert r.status_code == 401
        r = c.get(f"{srv.url}/avatars/{FAKE_AVATAR_ID}")
        assert r.status_code == 401
        r = c.post(f"{srv.url}/session-2d", json=body, headers={"x-api-key": KEY})
        assert r.status_code == 200
        r2 = c.post(f"{srv.url}/session-2d", json=body, headers={"authorization": f"Bearer {KEY}"})
        assert r2.status_code == 200
        for resp in (r, r2):
            assert KEY not in resp.text
        # open without the key: health and asset files (capability URLs)
        assert c.get(f"{srv.url}/healthz").status_code == 200
        assert c.get(f"{srv.url}/avatars/{FAKE_AVATAR_ID}/files/idle.mp4").status_code == 200
        # the key is not in the OpenAPI document or health
        assert KEY not in c.get(f"{srv.url}/openapi.json").text
        assert KEY not in c.get(f"{srv.url}/healthz").text


def test_non_loopback_bind_needs_a_key() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    assert not is_loopback("example.com")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", KEY)
    # a key others could guess (or a copy-paste accident) does not guard a reachable server
    for weak in (" ", "a", "some-key", "aaaaaaaaaaaaaaaaaaaaaaaa", " " + KEY):
        with pytest.raises(LipcoreError, match="weak API key"):
            check_bind("0.0.0.0", weak)
        check_bind("127.0.0.1", weak)  # loopback: the operator's own business
    with pytest.raises(LipcoreError, match="without an API key"):
        check_bind("0.0.0.0", None)
    # the real CLI refuses to start, with a clear message and exit code 2
    env = {k: v for k, v in os.environ.items() if k != "LIPCORE_API_KEY"}
    p = subprocess.run([sys.executable, "-c", "from lipcore.cli import main; main()", "serve",
                        "--host", "0.0.0.0", "--port", "1"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert p.returncode == 2
    assert "without an API key" in " ".join(p.stderr.split())


def test_sessions_are_isolated(server: RunningServer) -> None:
    async def body() -> None:
        async with httpx.AsyncClient() as c:
            mk = {"avatar_id": FAKE_AVATAR_ID, "voice_id": "test"}
            a = (await c.post(f"{server.url}/session-2d", json=mk)).json()
            b = (await c.post(f"{server.url}/session-2d", json=mk)).json()
            assert a["session_id"] != b["session_id"]
            tok_a = a["ws_url"].split("token=")[1]
            tok_b = b["ws_url"].split("token=")[1]
            assert tok_a != tok_b and len(tok_a) >= 40
            assert tok_a not in a["session_id"] and a["session_id"] not in tok_a
            # A's token cannot open B's socket; no token, a wrong one: 4401 before anything
            base_b = b["ws_url"].split("?")[0]
            for url in (f"{base_b}?token={tok_a}", base_b, f"{base_b}?token=",
                        f"{base_b}?token={tok_b[:-1]}"):
                async with connect(url) as ws:
                    with pytest.raises(ConnectionClosed) as exc:
                        await ws.recv()
                    assert exc.value.rcvd is not None and exc.value.rcvd.code == 4401
            async with connect(server.ws_base + "/ws/s_nosuchsession?token=" + tok_a) as ws:
                with pytest.raises(ConnectionClosed) as exc:
                    await ws.recv()
                assert exc.value.rcvd is not None and exc.value.rcvd.code == 4404

            # both connected; A speaks and stops: B sees nothing of it
            ra, rb = Received(), Received()
            async with connect(a["ws_url"]) as wa, connect(b["ws_url"]) as wb:
                await recv_one(wa, ra)
                await recv_one(wb, rb)
                await wa.send('{"type": "speak", "text": "nur fuer A"}')
                await recv_until(wa, ra, is_json("utterance_end"))
                await wa.send('{"type": "stop"}')
                await recv_until(wa, ra, is_json("stop"))
                await wb.send('{"type": "ping", "id": 1, "client_time_ms": 0}')
                await recv_until(wb, rb, is_json("pong"))
                assert [i[1]["type"] for i in rb.items] == ["hello", "pong"]
                ub = (await c.get(f"{server.url}/session-2d/{b['session_id']}/usage")).json()
                assert ub["utterances"] == 0 and ub["tts_characters"] == 0
                ua = (await c.get(f"{server.url}/session-2d/{a['session_id']}/usage")).json()
                assert ua["utterances"] == 1

    asyncio.run(body())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_secrets_never_in_logs(tmp_path: Path) -> None:
    """Run the real ``lipcore serve`` with JSON logs and debug level; use the key, a session
    token (in the WebSocket URL, which uvicorn's access log prints) and wrong keys; neither
    the key nor the token may appear in the logs."""
    from .conftest import write_fake_avatar

    write_fake_avatar(tmp_path / "data")
    port = _free_port()
    env = dict(os.environ, LIPCORE_TEST_KEY=KEY)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from lipcore.cli import main; main()", "serve", "--port",
         str(port), "--data-dir", str(tmp_path / "data"), "--api-key-env", "LIPCORE_TEST_KEY",
         "--json-logs", "--log-level", "debug"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        h = {"x-api-key": KEY}
        httpx.post(f"{url}/session-2d", json={"avatar_id": FAKE_AVATAR_ID, "voice_id": "x"},
                   headers={"x-api-key": "wrong-" + KEY})
        r = httpx.post(f"{url}/session-2d", headers=h,
                       json={"avatar_id": FAKE_AVATAR_ID, "voice_id": "en"}, timeout=30)
        assert r.status_code == 200, r.text
        s = r.json()
        token = s["ws_url"].split("token=")[1]

        async def ws_roundtrip() -> None:
            async with connect(s["ws_url"]) as ws:
                await ws.recv()
                await ws.send('{"type": "ping", "id": 1, "client_time_ms": 1}')
                await ws.recv()
            async with connect(s["ws_url"].replace(token, "bad" + token)) as ws:
                with pytest.raises(ConnectionClosed):
                    await ws.recv()

        asyncio.run(ws_roundtrip())
        httpx.delete(f"{url}/session-2d/{s['session_id']}", headers=h)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    logs = out + err
    assert "session created" in logs, logs[-2000:]
    assert KEY not in logs
    assert token not in logs
    assert "token=***" in logs  # the access log line was there, redacted
    json_lines = [ln for ln in err.splitlines() if ln.startswith("{")]
    assert json_lines and all(json.loads(ln)["level"] for ln in json_lines)
