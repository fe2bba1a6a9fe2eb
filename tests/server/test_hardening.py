"""Issue 17: what an attacker and an unlucky operator found, one regression test (or more) per
finding, against the real server on loopback (uvicorn, real sockets, real ``lipcore serve``
processes where the process matters)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from lipcore.errors import LipcoreError
from lipcore.server import ServerSettings, create_app
from lipcore.server.logs import RedactingFilter
from lipcore.testing import testing_engine

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

KEY = "k-3f9a1c77-this-is-the-test-api-key-0d2e"
ROOT = Path(__file__).resolve().parents[2]
MK = {"avatar_id": FAKE_AVATAR_ID, "voice_id": "test"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _serve_process(data_dir: Path, *args: str, env: dict[str, str] | None = None,
                   nofile: int | None = None) -> Any:
    """The real ``lipcore serve`` in its own process; yields (url, Popen)."""
    port = _free_port()

    def limit() -> None:
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    proc = subprocess.Popen(
        [sys.executable, "-c", "from lipcore.cli import main; main()", "serve", "--port",
         str(port), "--data-dir", str(data_dir), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})}, preexec_fn=limit,
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
            if proc.poll() is not None:
                raise AssertionError(proc.communicate()[1][-3000:])
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def _error_shape(r: httpx.Response) -> dict[str, Any]:
    """Every request error: a 4xx JSON ``{error, detail}``, short."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and isinstance(body["detail"], str)
    assert len(r.text) < 1000, r.text[:300]
    return dict(body)


# --------------------------------------------------------------------------- 1: upload auth


class _CountingApp:
    """Counts the request body bytes the app reads."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.read = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async def counting() -> Any:
            msg = await receive()
            self.read += len(msg.get("body", b""))
            return msg

        await self.app(scope, counting, send)


def test_unauthenticated_upload_is_refused_before_its_body_is_read(tmp_path: Path) -> None:
    write_fake_avatar(tmp_path / "data")
    app = _CountingApp(create_app(testing_engine(tts=make_tts(), default_tts="replay"),
                                  ServerSettings(data_dir=tmp_path / "data", api_key=KEY)))
    srv = start_server(app)
    try:
        port = int(srv.url.rsplit(":", 1)[1])
        total = 20_000_000
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /avatarize-2d HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: multipart/form-data; boundary=xyz\r\n"
                     b"Content-Length: " + str(total).encode() + b"\r\n\r\n"
                     b"--xyz\r\nContent-Disposition: form-data; name=\"hero_image\"; "
                     b"filename=\"a.png\"\r\n\r\n")
        sent = 0
        stop = threading.Event()

        def pour() -> None:
            nonlocal sent
            chunk = b"\0" * 65536
            with contextlib.suppress(OSError):
                while sent < total and not stop.is_set():
                    sent += sock.send(chunk)

        t0 = time.monotonic()
        pourer = threading.Thread(target=pour, daemon=True)
        pourer.start()
        sock.settimeout(10)
        answer = sock.recv(4096)
        elapsed = time.monotonic() - t0
        stop.set()
        sock.close()
        pourer.join(5)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b'"unauthorized"' in answer
        assert elapsed < 3.0
        # The app read none of it (so nothing was parsed or spooled), and the client was
        # still sending when the answer came.
        assert app.read == 0
        assert sent < total
        # With the key the same route still takes uploads (the bounds still apply).
        r = httpx.post(f"{srv.url}/avatarize-2d", headers={"x-api-key": KEY},
                       files={"hero_image": ("a.txt", b"not an image")}, timeout=60)
        assert r.status_code == 422 and "0x" not in r.text  # finding 9: no heap address
    finally:
        srv.stop()


# --------------------------------------------------------------------------- 2: slowloris


def test_half_sent_requests_do_not_starve_healthz(tmp_path: Path) -> None:
    """600 connections that never finish their headers, against a server whose process may
    open only 400 files: the flood is capped per address and timed out, and /healthz keeps
    answering a monitor on another loopback address."""
    write_fake_avatar(tmp_path / "data")
    with _serve_process(tmp_path / "data", "--header-timeout", "2",
                        "--max-connections-per-ip", "100", nofile=400) as (url, _proc):
        port = int(url.rsplit(":", 1)[1])
        half: list[socket.socket] = []
        try:
            for _ in range(600):
                s = socket.socket()
                s.settimeout(5)
                s.connect(("127.0.0.1", port))
                with contextlib.suppress(OSError):
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                half.append(s)
            t0 = time.monotonic()
            with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"),
                              timeout=3) as monitor:
                for _ in range(5):
                    r = monitor.get(f"http://127.0.0.1:{port}/healthz")
                    assert r.status_code == 200
            assert time.monotonic() - t0 < 3.0
            # Past the header timeout every half-sent request has been closed (408 or reset).
            time.sleep(2.5)
            still_open = 0
            for s in half:
                s.setblocking(False)
                try:
                    data = s.recv(4096)
                    if data and not data.startswith(b"HTTP/1.1 408"):
                        still_open += 1
                except BlockingIOError:
                    still_open += 1
                except OSError:
                    pass
            assert still_open == 0
        finally:
            for s in half:
                s.close()
        assert httpx.get(f"{url}/healthz", timeout=3).status_code == 200


def test_stalled_bodies_and_slow_second_requests_are_timed_out(tmp_path: Path) -> None:
    """The header timeout holds for the next request on a kept-alive connection too, and a
    body that stalls is answered 408 instead of holding its slot for ever."""
    write_fake_avatar(tmp_path / "data")
    with _serve_process(tmp_path / "data", "--header-timeout", "1") as (url, _proc):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            first = b""
            while b'"uptime_s"' not in first or not first.endswith(b"}"):
                first += s.recv(65536)
            assert first.startswith(b"HTTP/1.1 200")
            s.sendall(b"GET /healthz HTTP/1.1\r\nHo")
            t0 = time.monotonic()
            rest = b""
            while chunk := s.recv(65536):
                rest += chunk
            assert rest.startswith(b"HTTP/1.1 408") and 0.5 < time.monotonic() - t0 < 4
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            with contextlib.suppress(OSError):
                for _ in range(100):  # endless headers, fast enough to beat the timeout
                    s.sendall(b"X-Pad: " + b"p" * 1000 + b"\r\n")
            answer = s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
        # ...while a body sent in one piece with its headers is a body, not header bytes
        part = (b'--b\r\nContent-Disposition: form-data; name="hero_image"; filename="x.png"'
                b"\r\nContent-Type: image/png\r\n\r\n" + b"x" * 300_000 + b"\r\n--b--\r\n")
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"POST /avatarize-2d HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                      b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: "
                      + str(len(part)).encode() + b"\r\n\r\n" + part)
            answer = s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 422"), answer[:200]  # not an image
    app = create_app(testing_engine(tts=make_tts(), default_tts="replay"),
                     ServerSettings(data_dir=tmp_path / "data", body_idle_timeout_s=1.0))
    srv = start_server(app)
    try:
        port = int(srv.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /session-2d HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a")
            t0 = time.monotonic()
            answer = s.recv(65536)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"request_timeout" in answer and time.monotonic() - t0 < 4
    finally:
        srv.stop()


def test_builds_run_in_a_low_priority_worker_process(tmp_path: Path,
                                                     grace_hopper_path: Path) -> None:
    """Finding 10: a build runs outside the serving process (whose event loop it once stalled
    for 200 ms at a time) and at a lower CPU priority. The build's lock file is held by the
    process doing the build: /proc/locks names it."""
    write_fake_avatar(tmp_path / "data")
    app = create_app(testing_engine(tts=make_tts(), default_tts="replay"),
                     ServerSettings(data_dir=tmp_path / "data", idle_seconds=3.0))
    srv = start_server(app)
    result: list[httpx.Response] = []
    try:
        uploader = threading.Thread(target=lambda: result.append(httpx.post(
            f"{srv.url}/avatarize-2d", files={"hero_image": ("g.jpg",
                                                             grace_hopper_path.read_bytes())},
            timeout=300)))
        uploader.start()
        builder = None
        deadline = time.monotonic() + 120
        while builder is None and time.monotonic() < deadline and uploader.is_alive():
            for lock in (tmp_path / "data" / "avatars").glob(".*.lock"):
                with contextlib.suppress(OSError):
                    st = lock.stat()
                    for line in Path("/proc/locks").read_text().splitlines():
                        f = line.split()
                        if len(f) > 5 and f[1] == "FLOCK" and f[5].endswith(f":{st.st_ino}"):
                            builder = int(f[4])
            time.sleep(0.02)
        assert builder is not None, "no build lock seen"
        assert builder != os.getpid()
        with contextlib.suppress(ProcessLookupError):  # (it may just have finished)
            assert os.getpriority(os.PRIO_PROCESS, builder) >= os.getpriority(
                os.PRIO_PROCESS, 0) + 10
        uploader.join(300)
        assert result and result[0].status_code == 200, result[0].text if result else "none"
    finally:
        srv.stop()


# --------------------------------------------------------------------------- 3: host, origin


def test_host_and_origin_allow_lists(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: RunningServer = make_server()
    port = srv.url.rsplit(":", 1)[1]
    with httpx.Client(timeout=10) as c:
        # DNS rebinding: a name that resolves to 127.0.0.1 for the attacker's page
        r = c.get(f"{srv.url}/avatars", headers={"host": f"rebind.attacker.example:{port}"})
        assert r.status_code == 400 and _error_shape(r)["error"] == "host_not_allowed"
        r = c.post(f"{srv.url}/session-2d", json=MK, headers={"host": "attacker.example"})
        assert r.status_code == 400
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "[::1]", "app.localhost"):
            assert c.get(f"{srv.url}/avatars", headers={"host": host}).status_code == 200
        # cross-site: another site's page calling the keyless loopback server
        r = c.post(f"{srv.url}/session-2d", json=MK,
                   headers={"origin": "https://attacker.example"})
        assert r.status_code == 403 and _error_shape(r)["error"] == "origin_not_allowed"
        r = c.get(f"{srv.url}/avatars", headers={"origin": "null"})
        assert r.status_code == 403
        r = c.post(f"{srv.url}/session-2d", json=MK, headers={"origin": srv.url})
        assert r.status_code == 200  # the server's own page
        s = r.json()

    async def ws() -> None:
        with pytest.raises(InvalidStatus) as exc:
            async with connect(s["ws_url"], origin="https://attacker.example"):  # type: ignore[arg-type]
                pass
        assert exc.value.response.status_code == 403
        async with connect(s["ws_url"], origin=srv.url) as w:  # type: ignore[arg-type]
            await recv_one(w, Received())

    asyncio.run(ws())


def test_issued_urls_come_from_configuration_or_a_trusted_proxy(make_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(allowed_hosts=("avatar.internal",))
    with httpx.Client(timeout=10) as c:
        r = c.post(f"{srv.url}/session-2d", json=MK, headers={"host": "avatar.internal:8443",
                                                              "x-forwarded-host": "evil.example"})
        assert r.json()["ws_url"].startswith("ws://avatar.internal:8443/ws/")  # not believed
    srv2 = make_server(data_dir=tmp_path / "d2", public_url="https://avatar.example.com/av")
    with httpx.Client(timeout=10) as c:
        r = c.post(f"{srv2.url}/session-2d", json=MK)
        assert r.json()["ws_url"].startswith("wss://avatar.example.com/av/ws/")
        r = c.get(f"{srv2.url}/avatars", headers={"host": "avatar.example.com"})
        assert r.status_code == 200  # public_url's host is allowed
    srv3 = make_server(data_dir=tmp_path / "d3", forwarded_allow_ips=("127.0.0.1",),
                       allowed_hosts=("proxy.example",))
    with httpx.Client(timeout=10) as c:
        r = c.post(f"{srv3.url}/session-2d", json=MK,
                   headers={"x-forwarded-host": "proxy.example", "x-forwarded-proto": "https",
                            "x-forwarded-prefix": "/lip"})
        assert r.json()["ws_url"].startswith("wss://proxy.example/lip/ws/")
        r = c.get(f"{srv3.url}/avatars", headers={"x-forwarded-host": "evil.example"})
        assert r.status_code == 400  # a forwarded host is checked like a Host


# --------------------------------------------------------------------------- 4: pixel memory


def _png16(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("I;16", (w, h)).save(buf, "PNG")
    return buf.getvalue()


def test_a_40_megapixel_16_bit_png_decodes_in_bounded_memory(tmp_path: Path) -> None:
    png = tmp_path / "bomb16.png"
    png.write_bytes(_png16(8000, 5000))
    assert png.stat().st_size < 200_000
    code = (
        "import resource, sys\n"
        "from lipcore.avatar.image import load_photo\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "arr = load_photo(open(sys.argv[1], 'rb').read(), max_pixels=40_000_000)\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(arr.shape[0], arr.shape[1], (peak - base) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(png)], capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    h, w, grown_mb = (int(x) for x in out)
    assert (w, h) == (2048, 1280)
    assert grown_mb < 400, f"decoding took {grown_mb} MB"  # was ~1070 MB


def test_uploads_decode_outside_the_server_process(make_server) -> None:  # type: ignore[no-untyped-def]
    """The photo is decoded in the build worker, under the build limit: the server process's
    peak memory does not move when a 40-megapixel 16-bit PNG arrives."""
    srv: RunningServer = make_server()
    data = _png16(8000, 5000)
    clear = Path("/proc/self/clear_refs")

    def hwm_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    try:
        clear.write_text("5")  # reset the peak
    except OSError:
        pytest.skip("cannot reset the peak RSS here")
    before = hwm_mb()
    r = httpx.post(f"{srv.url}/avatarize-2d", files={"hero_image": ("b.png", data)},
                   timeout=120)
    assert r.status_code == 422, r.text  # a blank image has no face
    _error_shape(r)
    assert hwm_mb() - before < 150


# --------------------------------------------------------------------------- 5: client tokens


def test_scoped_client_tokens(make_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "data"
    write_fake_avatar(data, "a_second_avatar_xyz")
    srv: RunningServer = make_server(api_key=KEY, data_dir=data)
    key = {"x-api-key": KEY}
    with httpx.Client(timeout=10, base_url=srv.url) as c:
        assert c.post("/tokens", json={"avatar_id": FAKE_AVATAR_ID}).status_code == 401
        r = c.post("/tokens", json={"avatar_id": FAKE_AVATAR_ID, "session_id": "s"},
                   headers=key)
        assert r.status_code == 422 and _error_shape(r)
        r = c.post("/tokens", json={"avatar_id": FAKE_AVATAR_ID, "ttl_s": 10**9}, headers=key)
        assert r.status_code == 422
        r = c.post("/tokens", json={"avatar_id": "a_no_such_avatar"}, headers=key)
        assert r.status_code == 404
        t = c.post("/tokens", json={"avatar_id": FAKE_AVATAR_ID, "ttl_s": 600}, headers=key)
        assert t.status_code == 200, t.text
        tok = t.json()
        assert tok["scope"] == "avatar" and tok["id"] == FAKE_AVATAR_ID
        assert abs(tok["expires_at"] - (time.time() + 600)) < 30 and KEY not in tok["token"]
        av = {"authorization": f"Bearer {tok['token']}"}
        # the key lists every avatar; the token only its own
        assert len(c.get("/avatars", headers=key).json()["avatars"]) == 2
        mine = c.get("/avatars", headers=av).json()["avatars"]
        assert [a["avatar_id"] for a in mine] == [FAKE_AVATAR_ID]
        assert c.get(f"/avatars/{FAKE_AVATAR_ID}", headers=av).status_code == 200
        r = c.get("/avatars/a_second_avatar_xyz", headers=av)
        assert r.status_code == 403 and _error_shape(r)["error"] == "forbidden"
        assert c.get("/voices", headers=av).status_code == 200
        r = c.post("/session-2d", json={**MK, "avatar_id": "a_second_avatar_xyz"}, headers=av)
        assert r.status_code == 403
        s = c.post("/session-2d", json=MK, headers=av)
        assert s.status_code == 200
        sid = s.json()["session_id"]
        assert c.get(f"/session-2d/{sid}", headers=av).status_code == 200
        # key-only routes
        for method, path, body in (("GET", "/metrics", None), ("GET", "/openapi.json", None),
                                   ("POST", "/tokens", {"avatar_id": FAKE_AVATAR_ID})):
            r = c.request(method, path, headers=av, json=body)
            assert r.status_code == 403, (path, r.text)
        r = c.post("/avatarize-2d", headers=av, files={"hero_image": ("a.png", b"x")})
        assert r.status_code == 403
        # a session token drives its session only, and sees its avatar
        other = c.post("/session-2d", json=MK, headers=key).json()["session_id"]
        st = c.post("/tokens", json={"session_id": sid}, headers=key).json()
        assert st["scope"] == "session"
        sh = {"x-api-key": st["token"]}
        assert c.get(f"/session-2d/{sid}/usage", headers=sh).status_code == 200
        assert c.post(f"/session-2d/{sid}/speak", json={"text": "hi"},
                      headers=sh).status_code == 409  # authorised; nobody is connected
        assert c.get(f"/session-2d/{other}", headers=sh).status_code == 403
        assert c.post("/session-2d", json=MK, headers=sh).status_code == 403
        assert c.get(f"/avatars/{FAKE_AVATAR_ID}", headers=sh).status_code == 200
        assert [a["avatar_id"] for a in c.get("/avatars", headers=sh).json()["avatars"]] == [
            FAKE_AVATAR_ID]
        assert c.delete(f"/session-2d/{sid}", headers=sh).status_code == 200
        # forged, damaged, foreign and expired tokens are refused
        payload = tok["token"].split(".")
        forged = ".".join([payload[0], payload[1][:-2] + "xx", payload[2]])
        from lipcore.server.security import ClientTokens

        foreign = ClientTokens("another-key-entirely-0123456789")
        expired = ClientTokens(KEY)
        g = expired.mint("avatar", FAKE_AVATAR_ID, 1)
        old = expired.encode(type(g)(g.scope, g.id, int(time.time()) - 5))
        for bad in (forged, tok["token"][:-3], foreign.encode(
                foreign.mint("avatar", FAKE_AVATAR_ID, 60)), old, "lct1.garbage"):
            r = c.get("/avatars", headers={"authorization": f"Bearer {bad}"})
            assert r.status_code == 401, bad
            assert "expired" in r.json()["detail"] if bad is old else True


# --------------------------------------------------------------------------- 6: hostile input


def test_hostile_input_gets_a_short_4xx(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: RunningServer = make_server()
    base = f"{srv.url}/avatars/{FAKE_AVATAR_ID}/files"
    with httpx.Client(timeout=30) as c:
        for path in ("idle%00.mp4", "%00", "a" * 5000, "x/" * 3000 + "y", "%2e%2e/%00/z"):
            r = c.get(f"{base}/{path}")
            assert r.status_code == 404 and _error_shape(r)["error"] == "avatar_not_found"
        r = c.get(f"{srv.url}/avatars/{'a' * 5000}")
        assert r.status_code == 404 and _error_shape(r)
        r = c.get(f"{srv.url}/avatars/a%00b")
        assert r.status_code == 404
        # NaN and Infinity are not JSON: refused as invalid, and the connection lives on
        for raw in ('{"avatar_id": NaN, "voice_id": "x"}', '{"avatar_id": "a", "voice_id": '
                    'Infinity}', '{"avatar_id": -Infinity}', "[NaN]", "{", "\"" + "x" * 5000):
            r = c.post(f"{srv.url}/session-2d", content=raw,
                       headers={"content-type": "application/json"})
            assert r.status_code == 422, (raw[:40], r.text[:200])
            assert "NaN" not in r.text and "Infinity" not in r.text and "xxxxx" not in r.text
            _error_shape(r)
        r = c.post(f"{srv.url}/session-2d", json={**MK, "voice_id": "v" * 5000})
        assert r.status_code in (404, 422) and "v" * 200 not in r.text
        _error_shape(r)
        r = c.post(f"{srv.url}/session-2d/{'s' * 5000}/speak", json={"text": "hi"})
        _error_shape(r)
        # unknown route, wrong method, huge upload file name
        _error_shape(c.get(f"{srv.url}/no/such/route"))
        assert c.delete(f"{srv.url}/avatars").status_code == 405
        _error_shape(c.delete(f"{srv.url}/avatars"))
        r = c.post(f"{srv.url}/avatarize-2d",
                   files={"hero_image": ("n" * 5000 + ".png", b"not an image")})
        assert r.status_code in (400, 422) and "nnnnnnnnnn" not in r.text
        _error_shape(r)
        assert c.get(f"{srv.url}/healthz").status_code == 200


# --------------------------------------------------------------------------- 7, 8: data dir


def test_an_unusable_data_dir_is_refused_at_start(tmp_path: Path) -> None:
    engine = testing_engine(tts=make_tts(), default_tts="replay")
    afile = tmp_path / "a-file"
    afile.write_text("x")
    with pytest.raises(LipcoreError, match="is a file") as exc:
        create_app(engine, ServerSettings(data_dir=afile))
    assert exc.value.code == "bad_data_dir"
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        unwritable = ro / "data"
    else:  # root writes anywhere it may mkdir: use a file system that refuses everyone
        unwritable = Path("/sys/lipcore-data")
    with pytest.raises(LipcoreError, match="not writable"):
        create_app(engine, ServerSettings(data_dir=unwritable))
    # the real CLI: exit code 2 and the reason, before listening
    p = subprocess.run([sys.executable, "-c", "from lipcore.cli import main; main()", "serve",
                        "--port", str(_free_port()), "--data-dir", str(afile)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "is a file" in " ".join((p.stdout + p.stderr).split())


def test_half_built_avatars_are_removed_at_start(tmp_path: Path) -> None:
    avatars = tmp_path / "data" / "avatars"
    write_fake_avatar(tmp_path / "data")
    # what `kill -9` during a build leaves: the partial directory and an unheld lock
    (avatars / ".a_killed_build_01.building-1a2b3c4d").mkdir(parents=True)
    (avatars / ".a_killed_build_01.building-1a2b3c4d" / "idle.mp4").write_bytes(b"x" * 1000)
    (avatars / ".a_killed_build_01.lock").write_text("")
    # an avatar directory without a manifest, from an older server, an hour old
    old = avatars / "a_manifestless_01"
    old.mkdir()
    (old / "mouth.png").write_bytes(b"x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    # a build that is running right now in another worker on the same data dir
    live = avatars / ".a_live_build_0001.building-0f0f0f0f"
    live.mkdir()
    lock = (avatars / ".a_live_build_0001.lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        create_app(testing_engine(tts=make_tts(), default_tts="replay"),
                   ServerSettings(data_dir=tmp_path / "data"))
        names = sorted(p.name for p in avatars.iterdir())
    finally:
        lock.close()
    assert names == sorted([FAKE_AVATAR_ID, live.name, ".a_live_build_0001.lock"]), names


def _lock_holders(avatars: Path) -> list[int]:
    """Pids holding a build lock under ``avatars`` (from /proc/locks)."""
    inodes = set()
    for lock in avatars.glob(".*.lock"):
        with contextlib.suppress(OSError):
            inodes.add(lock.stat().st_ino)
    pids = []
    for line in Path("/proc/locks").read_text().splitlines():
        f = line.split()
        if len(f) > 5 and f[1] == "FLOCK" and int(f[5].rsplit(":", 1)[1]) in inodes:
            pids.append(int(f[4]))
    return pids


def test_kill_9_during_a_build_then_restart(tmp_path: Path, grace_hopper_path: Path) -> None:
    """The server and its build worker killed with SIGKILL mid-build: after a restart no
    half-built avatar is listed and nothing of the build is left on disk."""
    data = tmp_path / "data"
    avatars = data / "avatars"
    write_fake_avatar(data)
    photo = grace_hopper_path.read_bytes()
    with _serve_process(data) as (url, proc):
        def upload() -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.post(f"{url}/avatarize-2d", files={"hero_image": ("g.jpg", photo)},
                           timeout=120)

        uploader = threading.Thread(target=upload, daemon=True)
        uploader.start()
        deadline = time.monotonic() + 60
        while not (holders := _lock_holders(avatars)) or not list(avatars.glob(".*.building-*")):
            assert time.monotonic() < deadline, "the build never started"
            time.sleep(0.05)
        proc.kill()
        for pid in holders:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(30)
        uploader.join(30)
    assert list(avatars.glob(".*.building-*"))  # what the killed build left
    with _serve_process(data) as (url, _proc):
        listed = httpx.get(f"{url}/avatars", timeout=10).json()["avatars"]
        assert [a["avatar_id"] for a in listed] == [FAKE_AVATAR_ID]
    assert sorted(p.name for p in avatars.iterdir()) == [FAKE_AVATAR_ID]


# --------------------------------------------------------------------------- 9: leaks


def test_docs_and_schema_need_the_key_and_the_page_sends_security_headers(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: RunningServer = make_server(api_key=KEY)
    with httpx.Client(timeout=10) as c:
        assert c.get(f"{srv.url}/docs").status_code == 404  # no Swagger UI (it used a CDN)
        assert c.get(f"{srv.url}/redoc").status_code == 404
        r = c.get(f"{srv.url}/openapi.json")
        assert r.status_code == 401 and _error_shape(r)
        r = c.get(f"{srv.url}/openapi.json", headers={"x-api-key": KEY})
        assert r.status_code == 200 and "/tokens" in r.json()["paths"]
        page = c.get(f"{srv.url}/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        for r in (page, c.get(f"{srv.url}/healthz"), c.get(f"{srv.url}/avatars")):
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["referrer-policy"] == "no-referrer"
        assert "cdn" not in page.text.lower()


def test_redaction_of_disguised_tokens_and_url_encoded_keys() -> None:
    import logging

    key = "k/ey+with&url=special?chars 0123"
    f = RedactingFilter([key])
    lines = [
        'GET /ws/s_1?%74oken=SECRET1 HTTP/1.1',
        "GET /ws/s_1?visemes=inline&%54OKEN=SECRET2",
        "GET /x?api%5Fkey=SECRET3&k=1",
        f"GET /x?a={key}",
        "GET /x?a=k%2Fey%2Bwith%26url%3Dspecial%3Fchars%200123",
        "GET /x?a=k%2Fey%2Bwith%26url%3Dspecial%3Fchars+0123",
        "GET /x?a=k/ey%2Bwith%26url%3Dspecial%3Fchars%200123",
    ]
    for line in lines:
        rec = logging.LogRecord("uvicorn.access", logging.INFO, "", 0, line, None, None)
        f.filter(rec)
        out = rec.getMessage()
        assert "SECRET" not in out and "0123" not in out, out
    rec = logging.LogRecord("x", logging.INFO, "", 0, "GET /x?visemes=inline&id=7", None, None)
    f.filter(rec)
    assert rec.getMessage() == "GET /x?visemes=inline&id=7"  # the rest is left alone


# --------------------------------------------------------------------------- 11: protocol


def test_nan_ping_and_unclosed_tag(server: RunningServer) -> None:
    async def body() -> None:
        async with httpx.AsyncClient() as c:
            s = (await c.post(f"{server.url}/session-2d", json=MK)).json()
            rec = Received()
            async with connect(s["ws_url"]) as ws:
                await recv_one(ws, rec)
                for bad in ("NaN", "Infinity", "-Infinity", "1e999"):
                    await ws.send('{"type": "ping", "id": 1, "client_time_ms": ' + bad + "}")
                    _, err = await recv_until(ws, rec, is_json("error"))
                    assert err["code"] == "bad_message" and "finite" in err["message"]
                await ws.send('{"type": "ping", "id": 2, "client_time_ms": 5}')
                _, pong = await recv_until(ws, rec, is_json("pong"))
                assert pong["id"] == 2
                await ws.send('{"type": "speak", "text": "Hello <world and more"}')
                _, start = await recv_until(ws, rec, is_json("utterance_start"))
                assert start["text"] == "Hello world and more"
                await recv_until(ws, rec, is_json("utterance_end"))
            # every message the server sent was strict JSON
            for item in rec.items:
                if item[0] == "json":
                    json.dumps(item[1], allow_nan=False)

    asyncio.run(body())


def test_only_closed_tags_are_markup() -> None:
    from lipcore import clean_text

    assert clean_text("Hello <world and more") == "Hello world and more"
    assert clean_text("a < b and c") == "a b and c"
    assert clean_text("<speak><b>Hallo</b> Welt</speak>") == "Hallo Welt"
    assert clean_text("<<b>>hi") == "hi"
    assert clean_text("3 > 2 <i>ok</i>") == "3 > 2 ok"
    assert clean_text("x <b y") == "x b y"


def test_sigterm_closes_with_the_documented_code(tmp_path: Path) -> None:
    from lipcore.server.protocol import CLOSE_CODES

    write_fake_avatar(tmp_path / "data")
    with _serve_process(tmp_path / "data") as (url, proc):
        s = httpx.post(f"{url}/session-2d", json={"avatar_id": FAKE_AVATAR_ID,
                                                   "voice_id": "en"}, timeout=30).json()

        async def client() -> int:
            async with connect(s["ws_url"]) as ws:
                await ws.recv()
                proc.send_signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as exc:
                    while True:
                        await asyncio.wait_for(ws.recv(), 20)
                assert exc.value.rcvd is not None
                return exc.value.rcvd.code

        code = asyncio.run(client())
        proc.wait(30)
    assert code == 1012
    assert "shutting down" in CLOSE_CODES[code]
    doc = (ROOT / "docs" / "protocol.md").read_text()
    assert "| 1012 | server restarting or shutting down" in doc and "| 1001 |" not in doc
    vectors = json.loads((ROOT / "tests" / "vectors" / "close_codes.json").read_text())
    assert {c["code"] for c in vectors["codes"]} == set(CLOSE_CODES)
