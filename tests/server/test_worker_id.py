"""A worker id in one in-process server: ids and URLs carry it, also behind a public URL, and
the unprefixed paths keep working (the multi-process behaviour: tests/cluster)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from lipcore.server.cluster import check_worker_id, worker_of


def test_ids_and_urls_carry_the_worker(make_server: Callable[..., Any]) -> None:
    srv = make_server(worker_id="w7", public_url="https://avatar.example.com/base")
    r = httpx.post(f"{srv.url}/session-2d",
                   json={"avatar_id": "a_prebuilt_test_avatar", "voice_id": "en"})
    assert r.status_code == 200, r.text
    s = r.json()
    assert s["session_id"].startswith("s_w7.") and worker_of(s["session_id"]) == "w7"
    assert s["ws_url"].startswith(f"wss://avatar.example.com/base/w/w7/ws/{s['session_id']}?")
    av = httpx.get(f"{srv.url}/w/w7/avatars/a_prebuilt_test_avatar").json()
    assert av["idle_url"].startswith("https://avatar.example.com/base/w/w7/avatars/")
    # Both spellings of a path reach the same session.
    for path in (f"/session-2d/{s['session_id']}", f"/w/w7/session-2d/{s['session_id']}"):
        assert httpx.get(srv.url + path).json()["session_id"] == s["session_id"]
    h = httpx.get(f"{srv.url}/healthz").json()
    assert h["worker"] == "w7" and h["draining"] is False and h["sessions"] == 1


def test_without_a_worker_id_nothing_changes(server: Any) -> None:
    s = httpx.post(f"{server.url}/session-2d",
                   json={"avatar_id": "a_prebuilt_test_avatar", "voice_id": "en"}).json()
    assert worker_of(s["session_id"]) is None and "/w/" not in s["ws_url"]
    assert httpx.get(f"{server.url}/healthz").json()["worker"] is None


@pytest.mark.parametrize("bad", ["", "W1", "w_1", "-w", "w.1", "x" * 33])
def test_bad_worker_ids_are_refused_with_the_rule(bad: str) -> None:
    with pytest.raises(ValueError, match="a-z, 0-9 and '-'"):
        check_worker_id(bad)


def test_drain_waits_for_speaking_sessions_up_to_its_bound() -> None:
    import asyncio
    import time
    from types import SimpleNamespace

    from lipcore.server.cluster import Cluster

    speaking = SimpleNamespace(_current=object(), _turns=[], outbox=None)
    state = SimpleNamespace(sessions=SimpleNamespace(sessions={"s_w1.a": speaking}))
    cluster = Cluster("w1", state, drain_timeout_s=0.3)

    async def run() -> tuple[bool, float, bool]:
        t = time.monotonic()
        bounded = await cluster.drain()
        waited = time.monotonic() - t
        speaking._current = None  # the utterance ends: a drain now returns at once
        return bounded, waited, await cluster.drain()

    bounded, waited, finished = asyncio.run(run())
    assert cluster.draining and cluster.health() == {"worker": "w1", "draining": True}
    assert bounded is False and 0.3 <= waited < 1.0 and finished is True
