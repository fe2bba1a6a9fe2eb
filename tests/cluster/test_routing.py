"""Three real ``lipcore serve`` workers (subprocesses, real espeak-ng speech) behind a real
HAProxy with the shipped ``deploy/haproxy.cfg``, all on loopback; started once for the module.

Covers: sessions created through the balancer spread over the workers; speak, stop and
barge-in sent on plain paths through the balancer reach the owner (307 from a non-owner);
wrong-worker answers; per-worker health; a SIGTERM drain (rolling restart, no utterance cut);
``kill -9`` of a worker with a live session and a client that re-creates it elsewhere and
speaks again within 2 s.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets

from lipcore.server.cluster import worker_of
from lipcore.server.protocol import AUDIO_VISEMES_KIND, split_audio_visemes, unpack_frame
from lipcore.testing import write_test_avatar
from lipcore.testing_cluster import LocalCluster

AVATAR = "a_prebuilt_test_avatar"
LONG_TEXT = ("The quick brown fox jumps over the lazy dog, and then it runs around the "
             "field for a long while before it finally lies down to rest in the warm sun. ") * 3



@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    data = tmp_path_factory.mktemp("cluster-data")
    write_test_avatar(data, AVATAR)
    with LocalCluster(data, workers_n=3, extra_args=["--drain-timeout", "20"]) as c:
        yield c


def create(base: str) -> dict[str, Any]:
    r = httpx.post(f"{base}/session-2d", json={"avatar_id": AVATAR, "voice_id": "en"},
                   timeout=10)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


class Client:
    """A protocol client: every JSON event and audio frame it received, in order."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self.audio_ms: dict[int, float] = {}

    async def recv(self, timeout: float = 10.0) -> dict[str, Any] | None:
        msg = await asyncio.wait_for(self.ws.recv(), timeout)
        if isinstance(msg, bytes):
            header, payload = unpack_frame(msg)
            if header.kind == AUDIO_VISEMES_KIND:
                _, payload = split_audio_visemes(payload)
            self.audio_ms[header.utterance] = (self.audio_ms.get(header.utterance, 0.0)
                                               + len(payload) / 2 / 22.05)
            return {"type": "_audio", "utterance": header.utterance}
        data: dict[str, Any] = json.loads(msg)
        self.events.append(data)
        return data

    async def until(self, kind: str, timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            m = await self.recv(max(0.01, deadline - time.monotonic()))
            if m is not None and m["type"] == kind:
                return m

    async def speak(self, text: str, barge_in: bool = False) -> None:
        await self.ws.send(json.dumps({"type": "speak", "text": text, "barge_in": barge_in}))


def test_sessions_spread_over_workers_and_urls_name_the_owner(cluster: LocalCluster) -> None:
    owners = []
    for _ in range(6):
        s = create(cluster.url)
        owner = worker_of(s["session_id"])
        assert owner is not None
        # Every session URL carries the owner, so the balancer routes it by path.
        assert f"/w/{owner}/ws/{s['session_id']}?" in s["ws_url"]
        assert s["ws_url"].startswith(f"ws://127.0.0.1:{cluster.port}/")
        owners.append(owner)
    assert set(owners) == {"w1", "w2", "w3"}, owners
    # Health per worker, through the balancer's routed path.
    for w in cluster.workers:
        h = httpx.get(f"{cluster.url}/w/{w.worker_id}/healthz").json()
        assert h["worker"] == w.worker_id and h["draining"] is False and h["ok"] is True


def test_wrong_worker_is_answered_never_lost(cluster: LocalCluster) -> None:
    w1 = cluster.worker("w1")
    # A plain session path of w2's session reaching w1: 307 to the owner's path.
    r = httpx.post(f"{w1.url}/session-2d/s_w2.abcdefgh/stop?x=1")
    assert r.status_code == 307
    assert r.headers["location"] == "/w/w2/session-2d/s_w2.abcdefgh/stop?x=1"
    assert r.json()["owner"] == "w2"
    # A path routed to the wrong worker (a misconfigured balancer): 421 naming the owner.
    r = httpx.get(f"{w1.url}/w/w3/session-2d/s_w3.abcdefgh")
    assert r.status_code == 421 and r.json()["error"] == "wrong_worker"
    assert r.json()["owner"] == "w3" and r.json()["worker"] == "w1"

    async def ws_close_code(url: str) -> tuple[int | None, str | None]:
        async with websockets.connect(url) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            return ws.close_code, ws.close_reason

    code, reason = asyncio.run(ws_close_code(f"ws://127.0.0.1:{w1.port}/ws/s_w2.abcdefgh"))
    assert code == 4421 and reason == "connect to /w/w2/ws/s_w2.abcdefgh"
    # An unknown session on its own worker is the usual 404.
    r = httpx.get(f"{cluster.url}/w/w1/session-2d/s_w1.unknown-session")
    assert r.status_code == 404 and r.json()["error"] == "session_not_found"


def test_speak_stop_and_barge_in_through_other_workers(cluster: LocalCluster) -> None:
    async def run() -> None:
        s = create(cluster.url)
        sid, owner = s["session_id"], worker_of(s["session_id"])
        async with websockets.connect(s["ws_url"]) as ws:
            c = Client(ws)
            await c.until("hello")
            async with httpx.AsyncClient(follow_redirects=True, timeout=10) as http:
                # Plain paths round-robin over the workers; two of three answer 307 to the
                # owner's path. Send enough that non-owners certainly got some.
                hops = []
                for _ in range(3):
                    r = await http.get(f"{cluster.url}/session-2d/{sid}")
                    assert r.status_code == 200 and r.json()["session_id"] == sid
                    hops.append([h.status_code for h in r.history])
                assert [307] in hops, hops
                r = await http.post(f"{cluster.url}/session-2d/{sid}/speak",
                                    json={"text": LONG_TEXT})
                assert r.status_code == 200, r.text
                start = await c.until("utterance_start")
                await c.until("_audio")
                r = await http.post(f"{cluster.url}/session-2d/{sid}/speak",
                                    json={"text": "Now something else.", "barge_in": True})
                assert r.status_code == 200, r.text
                stop = await c.until("stop")
                assert stop["utterance"] == start["utterance"]
                second = await c.until("utterance_start")
                assert second["text"] == "Now something else."
                r = await http.post(f"{cluster.url}/session-2d/{sid}/stop")
                assert r.status_code == 200
                await c.until("stop")
                r = await http.delete(f"{cluster.url}/session-2d/{sid}")
                assert r.status_code == 200
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await c.recv()
            assert ws.close_code == 1000
        assert owner is not None
        r = httpx.get(f"{cluster.url}/w/{owner}/session-2d/{sid}")
        assert r.status_code == 410

    asyncio.run(run())


def _owned_session(cluster: LocalCluster, worker_id: str) -> dict[str, Any]:
    for _ in range(12):
        s = create(cluster.url)
        if worker_of(s["session_id"]) == worker_id:
            return s
        httpx.delete(f"{cluster.url}/session-2d/{s['session_id']}", follow_redirects=True)
    raise AssertionError(f"no session landed on {worker_id}")


def test_sigterm_drains_a_rolling_restart_cuts_no_utterance(cluster: LocalCluster) -> None:
    w1 = cluster.worker("w1")

    async def run() -> None:
        s = _owned_session(cluster, "w1")
        async with websockets.connect(s["ws_url"]) as ws:
            c = Client(ws)
            await c.until("hello")
            # A streamed turn (text arriving from an LLM, say) is in flight when SIGTERM comes:
            # espeak-ng synthesises faster than real time, so a plain speak would be finished
            # on the server before the signal; a stream stays open until its text_end.
            sentences = [p + "." for p in LONG_TEXT.replace(", ", ". ").split(". ") if p]
            await ws.send(json.dumps({"type": "text_delta", "delta": sentences[0] + " "}))
            start = await c.until("utterance_start")
            w1.terminate()  # SIGTERM while the utterance is in flight
            await asyncio.sleep(0.2)
            # Draining: the health check fails (the balancer stops routing new work here) and
            # the worker itself refuses new sessions.
            h = httpx.get(f"{w1.url}/healthz")
            assert h.status_code == 503 and h.json()["draining"] is True
            assert h.json()["busy"] == 1
            r = httpx.post(f"{w1.url}/session-2d", json={"avatar_id": AVATAR, "voice_id": "en"})
            assert r.status_code == 503 and r.json()["error"] == "draining"
            # Through the balancer new sessions still succeed, on the other workers.
            for _ in range(4):
                assert worker_of(create(cluster.url)["session_id"]) in ("w2", "w3")
            # The utterance goes on to its end, as slowly as its text arrives.
            for part in sentences[1:]:
                await ws.send(json.dumps({"type": "text_delta", "delta": part + " "}))
                await asyncio.sleep(0.1)
            await ws.send(json.dumps({"type": "text_end"}))
            end = await c.until("utterance_end", timeout=30)
            assert end["utterance"] == start["utterance"] and end["reason"] == "done"
            # All of its audio arrived: nothing was cut.
            assert abs(c.audio_ms[start["utterance"]] - end["duration_ms"]) < 50
            assert end["duration_ms"] > 10_000
            assert not [e for e in c.events if e["type"] == "stop"]
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await c.recv(30)
            assert ws.close_code in (1001, 1012), ws.close_code  # going away / restart
        # The client moves on: a new session on a live worker speaks.
        s2 = create(cluster.url)
        assert worker_of(s2["session_id"]) in ("w2", "w3")
        async with websockets.connect(s2["ws_url"]) as ws:
            c = Client(ws)
            await c.until("hello")
            await c.speak("Hello again.")
            assert (await c.until("utterance_end"))["reason"] == "done"

    asyncio.run(run())
    assert w1.proc is not None and w1.proc.wait(30) == 0
    # ... and the restarted worker takes sessions again (the rolling restart's next step).
    w1.start()
    cluster.wait_routed()
    deadline = time.monotonic() + 10
    while worker_of(create(cluster.url)["session_id"]) != "w1":
        assert time.monotonic() < deadline, "restarted worker gets no sessions"


def test_kill9_client_recreates_session_and_speaks_within_2s(cluster: LocalCluster) -> None:
    w2 = cluster.worker("w2")

    async def run() -> float:
        s = _owned_session(cluster, "w2")
        async with websockets.connect(s["ws_url"]) as ws:
            c = Client(ws)
            await c.until("hello")
            await c.speak(LONG_TEXT)
            await c.until("_audio")
            w2.kill()
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await c.recv(10)
            t_drop = time.monotonic()
            # The documented code for a lost worker: 1006 (no close frame; the connection
            # dropped).
            assert ws.close_code == 1006
        # Re-create through the balancer (it retries a refused connection on a live worker)
        # and speak again.
        async with httpx.AsyncClient(timeout=5) as http:
            r = await http.post(f"{cluster.url}/session-2d",
                                json={"avatar_id": AVATAR, "voice_id": "en"})
            assert r.status_code == 200, r.text
            s2 = r.json()
        assert worker_of(s2["session_id"]) in ("w1", "w3")
        async with websockets.connect(s2["ws_url"]) as ws:
            c = Client(ws)
            await c.until("hello")
            await c.speak("I am back.")
            await c.until("_audio")
            resumed = time.monotonic() - t_drop
            await c.until("utterance_end")
        return resumed

    resumed = asyncio.run(run())
    print(f"kill -9 → new session speaking after {resumed * 1000:.0f} ms")
    assert resumed < 2.0, resumed
    # The dead worker's session paths give a clear 503 from the balancer, not a hang.
    r = httpx.get(f"{cluster.url}/w/w2/healthz", timeout=10)
    assert r.status_code == 503




def test_web_client_recreates_a_lost_session_and_says_the_cut_sentence_again(
        cluster: LocalCluster) -> None:
    """The real web client (headless Chromium) loaded through the balancer: kill -9 of the
    worker that holds its session; the page re-creates the session on a live worker and the
    cut sentence is heard again within 2 s of the drop."""
    import shutil

    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or "/usr/bin/chromium"
    for w in cluster.workers:  # the previous test killed one: start it again
        if not w.alive:
            w.start()
    cluster.wait_routed()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"])
        try:
            page = browser.new_page(bypass_csp=True)
            page.goto(f"{cluster.url}/?avatar={AVATAR}&voice=en")
            page.wait_for_function("window.lipcore && window.lipcore.state.ready", timeout=30_000)
            sid = page.evaluate("window.lipcore.session().hello.session_id")
            owner = worker_of(sid)
            assert owner is not None
            page.evaluate(f"window.lipcore.speak({json.dumps(LONG_TEXT)})")
            page.wait_for_function(
                "window.lipcore.state.events.some(e => e.type === 'first_audio')", timeout=15_000)
            cluster.worker(owner).kill()
            try:
                page.wait_for_function(
                    "window.lipcore.state.events.some(e => e.type === 'recovered')",
                    timeout=10_000)
            except Exception:
                events = page.evaluate("window.lipcore.state.events")
                raise AssertionError([e for e in events if e["type"] != "pong"][-15:]) from None
            page.wait_for_function(
                "(() => { const ev = window.lipcore.state.events;"
                " const r = ev.findIndex(e => e.type === 'recovered');"
                " return ev.slice(r).some(e => e.type === 'first_audio'); })()",
                timeout=10_000)
            assert page.text_content("#status") == "live"  # the page says it is back
            events = page.evaluate("window.lipcore.state.events")
            new_sid = page.evaluate("window.lipcore.session().hello.session_id")
        finally:
            browser.close()
    closed = next(e for e in events if e["type"] == "closed")
    assert closed["code"] == 1006
    rec = next(e for e in events if e["type"] == "recovered")
    heard = next(e for e in events if e["type"] == "first_audio" and e["t"] > rec["t"])
    assert worker_of(new_sid) not in (None, owner)
    said_again = [e for e in events if e["type"] == "speak" and e["t"] > closed["t"]]
    assert said_again and said_again[0]["text"] == LONG_TEXT.strip()
    resumed_ms = heard["t"] + heard["heard_in_ms"] - closed["t"]
    print(f"web client: kill -9 → cut sentence heard again after {resumed_ms:.0f} ms")
    assert resumed_ms < 2000, resumed_ms
