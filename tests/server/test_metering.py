"""Usage metering and the per-key session limit in one process (no Redis): the behaviour a
single server keeps; tests/cluster/test_metering.py runs the same across workers with Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

KEY = "k" * 32
H = {"x-api-key": KEY}


def test_key_session_limit_and_usage_in_one_process(make_server: Callable[..., Any]) -> None:
    srv = make_server(api_key=KEY, key_max_sessions=2)
    body = {"avatar_id": "a_prebuilt_test_avatar", "voice_id": "en"}
    ids = []
    for _ in range(2):
        r = httpx.post(f"{srv.url}/session-2d", json=body, headers=H)
        assert r.status_code == 200, r.text
        ids.append(r.json()["session_id"])
    r = httpx.post(f"{srv.url}/session-2d", json=body, headers=H)
    assert r.status_code == 429 and r.json()["error"] == "key_session_limit"
    assert "on this server" in r.json()["detail"]
    u = httpx.get(f"{srv.url}/usage", headers=H).json()
    assert u["scope"] == "process" and u["live_sessions"] == 2 and u["sessions"] == 2
    assert KEY not in str(u)  # the key id is a hash, never the key
    assert httpx.delete(f"{srv.url}/session-2d/{ids[0]}", headers=H).status_code == 200
    r = httpx.post(f"{srv.url}/session-2d", json=body, headers=H)
    assert r.status_code == 200
    u = httpx.get(f"{srv.url}/usage", headers=H).json()
    assert u["live_sessions"] == 2 and u["sessions"] == 3
    assert httpx.get(f"{srv.url}/usage").status_code == 401
