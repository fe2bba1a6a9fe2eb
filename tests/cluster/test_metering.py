"""Usage and the per-key session limit across two real workers sharing a real Debian
``redis-server`` on loopback (behind HAProxy); started once for the module."""

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
from lipcore.testing import write_test_avatar
from lipcore.testing_cluster import LocalCluster, start_redis

KEY = "cluster-test-key-" + "x" * 24
H = {"x-api-key": KEY}
AVATAR = "a_prebuilt_test_avatar"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    redis, url = start_redis()
    data = tmp_path_factory.mktemp("metering-data")
    write_test_avatar(data, AVATAR)
    try:
        with LocalCluster(data, workers_n=2,
                          env={"LIPCORE_API_KEY": KEY, "LIPCORE_REDIS_URL": url},
                          extra_args=["--key-max-sessions", "3", "--metering-ttl", "2"]) as c:
            yield c
    finally:
        redis.kill()


def _create(c: LocalCluster) -> httpx.Response:
    return httpx.post(f"{c.url}/session-2d", json={"avatar_id": AVATAR, "voice_id": "en"},
                      headers=H, timeout=10)


def _usage(c: LocalCluster, worker: str) -> dict[str, Any]:
    r = httpx.get(f"{c.url}/w/{worker}/usage", headers=H, timeout=5)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _until(pred: Any, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_limit_and_usage_are_shared_by_the_workers(cluster: LocalCluster) -> None:
    sessions = [_create(cluster).json() for _ in range(3)]
    owners = {worker_of(s["session_id"]) for s in sessions}
    assert owners == {"w1", "w2"}  # the three sessions live on both workers ...
    r = _create(cluster)  # ... and count against one limit
    assert r.status_code == 429 and r.json()["error"] == "key_session_limit"
    assert "on all workers" in r.json()["detail"]

    texts = {"w1": "Hello from the first worker.", "w2": "And the second one speaks too."}

    async def speak(s: dict[str, Any], text: str) -> None:
        async with websockets.connect(s["ws_url"]) as ws:
            await ws.send(json.dumps({"type": "speak", "text": text}))
            while True:
                m = await asyncio.wait_for(ws.recv(), 15)
                if isinstance(m, str) and json.loads(m)["type"] == "utterance_end":
                    return

    async def both() -> None:
        picked = {worker_of(s["session_id"]): s for s in sessions}
        await asyncio.gather(*(speak(picked[w], t) for w, t in texts.items()))

    asyncio.run(both())
    want = sum(len(t) for t in texts.values())
    # Either worker reports the key's usage on both (live sessions flush every 2 s).
    _until(lambda: _usage(cluster, "w1")["tts_characters"] == want)
    u1, u2 = _usage(cluster, "w1"), _usage(cluster, "w2")
    for u in (u1, u2):
        assert u["scope"] == "cluster" and u["utterances"] == 2 and u["sessions"] == 3
        assert u["live_sessions"] == 3 and u["tts_characters"] == want
        assert u["audio_seconds"] > 2.0
    assert KEY not in json.dumps(u1)

    # A worker killed with kill -9 cannot release its sessions: they stop counting after the
    # TTL (2 s here), and the key may open sessions again.
    on_w2 = sum(1 for s in sessions if worker_of(s["session_id"]) == "w2")
    cluster.worker("w2").kill()
    _until(lambda: _usage(cluster, "w1")["live_sessions"] == 3 - on_w2)
    r = _create(cluster)
    assert r.status_code == 200 and worker_of(r.json()["session_id"]) == "w1"
