"""Usage metering and per-key limits, per process or across workers through Redis.

Every session belongs to the credential that created it (its *key id*: a short hash of the API
key presented, never the key itself; ``"open"`` without one). Two things are kept per key id:

* **usage**: TTS characters, audio seconds, utterances, sessions opened (``GET /usage``);
* **live sessions**, for the limit ``key_max_sessions`` (``POST /session-2d`` → 429
  ``key_session_limit`` when the key already holds that many).

Without ``redis_url`` both live in this process (one worker: as exact as before). With it they
live in Redis, shared by every worker: usage in a hash per key (``HINCRBYFLOAT``, flushed every
``metering_interval_s`` and when a session closes), live sessions in a sorted set per key whose
scores are expiry times that each worker renews for its own sessions, so the sessions of a
worker killed with ``kill -9`` stop counting after ``metering_ttl_s`` instead of forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import defaultdict
from typing import Any

from lipcore.errors import LimitError, LipcoreError

__all__ = ["KeySessionLimitError", "Metering", "key_id_of"]

logger = logging.getLogger("lipcore.server.metering")

_FIELDS = ("tts_characters", "audio_seconds", "utterances", "stopped", "errors")


class KeySessionLimitError(LimitError):
    code = "key_session_limit"
    http_status = 429


def key_id_of(headers: Any) -> str:
    """The key id of a request's credential (``X-API-Key`` or ``Authorization: Bearer``): 12
    hex digits of its SHA-256, or ``"open"`` without one. Never the credential itself."""
    presented = headers.get("x-api-key")
    if presented is None:
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            presented = auth[7:].strip()
    if not presented:
        return "open"
    return hashlib.sha256(presented.encode()).hexdigest()[:12]


class Metering:
    """Usage per key id and the per-key session limit (module docstring). ``sessions`` is the
    app's :class:`~lipcore.server.sessions.SessionManager` (usage is read from its sessions)."""

    def __init__(self, sessions: Any, *, redis_url: str | None, key_max_sessions: int | None,
                 interval_s: float = 2.0, ttl_s: float = 15.0, worker: str | None = None,
                 namespace: str = "lipcore") -> None:
        self.sessions = sessions
        self.key_max_sessions = key_max_sessions
        # Live entries are renewed at least three times per TTL: a late flush (a busy loop)
        # must not let a live session expire.
        self.interval_s = min(interval_s, ttl_s / 3)
        self.ttl_s = ttl_s
        self.worker = worker or "single"
        self.ns = namespace
        self.redis: Any = None
        if redis_url:
            try:
                import redis.asyncio as aioredis
            except ImportError as exc:  # pragma: no cover - a set-up error
                raise LipcoreError("redis_url is set but the redis package is missing: "
                                   "pip install 'lipcore[cluster]'") from exc
            self.redis = aioredis.from_url(redis_url, socket_timeout=2,
                                           socket_connect_timeout=2)
        self._owner: dict[str, str] = {}  # session id → key id
        self._flushed: dict[str, dict[str, float]] = {}  # session id → usage already counted
        self._local_usage: dict[str, dict[str, float]] = defaultdict(
            lambda: dict.fromkeys((*_FIELDS, "sessions"), 0.0))
        self._task: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[None]] = set()
        # One flush or release at a time: a session closing during a flush is counted once.
        self._lock: asyncio.Lock | None = None
        sessions.close_hooks.append(self._on_close)

    @property
    def shared(self) -> bool:
        return self.redis is not None

    def _k(self, *parts: str) -> str:
        return ":".join((self.ns, *parts))

    # ------------------------------------------------------------------ sessions

    async def opened(self, key_id: str, session_id: str) -> None:
        """Count a new session for ``key_id``; :class:`KeySessionLimitError` (nothing counted)
        when the key already holds ``key_max_sessions`` live sessions on all workers."""
        limit = self.key_max_sessions
        if self.redis is None:
            live = sum(1 for k in self._owner.values() if k == key_id)
            if limit is not None and live >= limit:
                raise self._limit_error(live)
            self._owner[session_id] = key_id
            self._local_usage[key_id]["sessions"] += 1
            return
        zkey = self._k("live", key_id)
        now = time.time()
        try:
            pipe = self.redis.pipeline(transaction=True)
            pipe.zremrangebyscore(zkey, "-inf", now)
            pipe.zadd(zkey, {session_id: now + self.ttl_s})
            pipe.zcard(zkey)
            pipe.expire(zkey, int(self.ttl_s * 4) + 1)
            _, _, live, _ = await pipe.execute()
            if limit is not None and live > limit:
                await self.redis.zrem(zkey, session_id)
                raise self._limit_error(live - 1)
            await self.redis.hincrbyfloat(self._k("usage", key_id), "sessions", 1)
        except LimitError:
            raise
        except Exception as exc:
            raise _unreachable(exc) from exc
        self._owner[session_id] = key_id
        self._ensure_task()

    def _limit_error(self, live: int) -> KeySessionLimitError:
        where = "on all workers" if self.shared else "on this server"
        return KeySessionLimitError(
            f"this key holds {live} live sessions {where}, its limit (key_max_sessions="
            f"{self.key_max_sessions}); close one (DELETE /session-2d/{{id}}) or retry later"
        )

    def _on_close(self, session: Any) -> None:
        key_id = self._owner.pop(session.session_id, None)
        if key_id is None:
            return
        if self.redis is None:
            delta, _ = self._delta(session)
            self._flushed.pop(session.session_id, None)
            self._add_local(key_id, delta)
            return

        async def release() -> None:
            try:
                async with self._get_lock():
                    delta, _ = self._delta(session)
                    self._flushed.pop(session.session_id, None)
                    await self.redis.zrem(self._k("live", key_id), session.session_id)
                    await self._add_redis(key_id, delta)
            except Exception as exc:  # a session that closes cannot wait for Redis: logged
                logger.warning("usage of a closed session not recorded: %s", exc)

        with contextlib.suppress(RuntimeError):  # no running loop: shutting down
            task = asyncio.get_running_loop().create_task(release())
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    # ------------------------------------------------------------------ usage

    def _delta(self, session: Any, *, commit: bool = True) -> tuple[dict[str, float],
                                                                      dict[str, float]]:
        """(usage not counted yet, usage now); ``commit``: count it as counted."""
        u = session.usage
        now = {f: float(getattr(u, f)) for f in _FIELDS}
        before = self._flushed.get(session.session_id, dict.fromkeys(_FIELDS, 0.0))
        if commit:
            self._flushed[session.session_id] = now
        return {f: now[f] - before[f] for f in _FIELDS if now[f] != before[f]}, now

    def _add_local(self, key_id: str, delta: dict[str, float]) -> None:
        for f, v in delta.items():
            self._local_usage[key_id][f] += v

    async def _add_redis(self, key_id: str, delta: dict[str, float]) -> None:
        if not delta:
            return
        pipe = self.redis.pipeline(transaction=False)
        for f, v in delta.items():
            pipe.hincrbyfloat(self._k("usage", key_id), f, v)
        await pipe.execute()

    async def usage(self, key_id: str) -> dict[str, Any]:
        """Usage of ``key_id`` so far (all workers with Redis; live sessions' newest usage is
        included up to the last flush, at most ``metering_interval_s`` old)."""
        if self.redis is None:
            totals = dict(self._local_usage.get(key_id) or dict.fromkeys((*_FIELDS, "sessions"),
                                                                         0.0))
            for sid, owner in self._owner.items():  # live sessions: exact, unflushed too
                s = self.sessions.sessions.get(sid)
                if owner == key_id and s is not None:
                    flushed = self._flushed.get(sid, {})
                    for f in _FIELDS:
                        totals[f] += float(getattr(s.usage, f)) - flushed.get(f, 0.0)
            live = sum(1 for k in self._owner.values() if k == key_id)
        else:
            try:
                raw = await self.redis.hgetall(self._k("usage", key_id))
                zkey = self._k("live", key_id)
                await self.redis.zremrangebyscore(zkey, "-inf", time.time())
                live = int(await self.redis.zcard(zkey))
            except Exception as exc:
                raise _unreachable(exc) from exc
            totals = dict.fromkeys((*_FIELDS, "sessions"), 0.0)
            for k, v in raw.items():
                name = k.decode() if isinstance(k, bytes) else str(k)
                if name in totals:
                    totals[name] = float(v)
        out: dict[str, Any] = {"key_id": key_id, "scope": "cluster" if self.shared else "process",
                               "live_sessions": live}
        for f, v in totals.items():
            out[f] = round(v, 3) if f == "audio_seconds" else round(v)
        return out

    # ------------------------------------------------------------------ background

    def _ensure_task(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(),
                                                                name="lipcore-metering")

    async def _loop(self) -> None:
        while self._owner:
            await asyncio.sleep(self.interval_s)
            with contextlib.suppress(Exception):
                await self.flush()

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def flush(self) -> None:
        """Renew this worker's live sessions in Redis and add their new usage."""
        if self.redis is None:
            return
        async with self._get_lock():
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        expiry = time.time() + self.ttl_s
        by_key: dict[str, dict[str, float]] = defaultdict(dict)
        renew: dict[str, dict[str, float]] = defaultdict(dict)
        counted: dict[str, dict[str, float]] = {}
        for sid, key_id in list(self._owner.items()):
            s = self.sessions.sessions.get(sid)
            if s is None:
                continue
            renew[key_id][sid] = expiry
            delta, counted[sid] = self._delta(s, commit=False)
            for f, v in delta.items():
                by_key[key_id][f] = by_key[key_id].get(f, 0.0) + v
        pipe = self.redis.pipeline(transaction=False)
        for key_id, members in renew.items():
            # Not XX: a live session whose entry expired anyway (Redis was unreachable for a
            # while) is counted again. A closed one is not in _owner (popped before the lock).
            pipe.zadd(self._k("live", key_id), members)
            pipe.expire(self._k("live", key_id), int(self.ttl_s * 4) + 1)
        for key_id, delta in by_key.items():
            for f, v in delta.items():
                pipe.hincrbyfloat(self._k("usage", key_id), f, v)
        await pipe.execute()
        # Counted only once Redis took it: a failed flush is retried with the next one.
        for sid, now in counted.items():
            if sid in self._owner:
                self._flushed[sid] = now

    async def close(self) -> None:
        """Flush and stop (the app's shutdown)."""
        if self._task is not None:
            self._task.cancel()
        if self._releases:  # the closed sessions' last usage
            await asyncio.wait(set(self._releases), timeout=2)
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.flush()
            with contextlib.suppress(Exception):
                await self.redis.aclose()


def _unreachable(exc: Exception) -> LipcoreError:
    class MeteringUnavailableError(LipcoreError):
        code = "metering_unavailable"
        http_status = 503

    return MeteringUnavailableError(
        f"the usage store (Redis) cannot be reached ({type(exc).__name__}); sessions cannot be "
        "counted against their key's limit now, retry later"
    )
