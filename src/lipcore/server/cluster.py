"""Many ``lipcore serve`` workers behind one address (``docs/deploy.md``).

A worker started with a *worker id* (``--worker-id`` / ``$LIPCORE_WORKER_ID``) puts that id into
everything a session owns, so a load balancer can route by path with no lookup:

* session ids are ``s_<worker>.<random>``;
* every URL the worker hands out (``ws_url``, asset URLs) starts with ``/w/<worker>/``, and the
  worker serves every route under that prefix as well as without it.

Requests that reach the wrong worker are never silently lost (:class:`ClusterRouter`):

* a path *without* the prefix that names another worker's session (``/session-2d/s_w2.…/speak``,
  ``/ws/s_w2.…``) is answered ``307`` to the owner's prefixed path (same method and body), which
  the balancer routes to the owner; a WebSocket cannot follow a redirect, so it is accepted and
  closed with **4421** whose reason names the path to use;
* a path *with* another worker's prefix (the balancer itself routed it wrongly, so a redirect
  would loop) is answered ``421 wrong_worker`` naming the owner (WebSocket: 4421).

Drain (``SIGTERM`` under :func:`run_server`): the worker stops taking sessions (``POST
/session-2d`` → 503 ``draining``, ``/healthz`` → 503 so the balancer stops routing to it) while
the utterances in flight finish, for at most ``drain_timeout_s``; then it shuts down as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import time
from types import FrameType
from typing import Any

__all__ = [
    "WORKER_ID_RE",
    "Cluster",
    "ClusterRouter",
    "check_worker_id",
    "run_server",
    "worker_of",
]

logger = logging.getLogger("lipcore.server.cluster")

#: A worker id: short, lower-case, safe in a path segment, a DNS label and an HAProxy name.
WORKER_ID_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$")

#: The WebSocket close code for "this session lives on another worker" (the reason names the
#: path to connect to).
WRONG_WORKER_CLOSE = 4421

_SESSION_PATH = re.compile(r"^/(?:session-2d|ws)/(s_[^/]+)")


def check_worker_id(worker_id: str) -> str:
    """``worker_id`` if it is usable in paths, session ids and balancer names, else a
    ``ValueError`` that says what is allowed."""
    if not WORKER_ID_RE.match(worker_id):
        raise ValueError(
            f"worker id {worker_id!r} is not usable: 1-32 characters a-z, 0-9 and '-', "
            "starting and ending with a letter or digit (e.g. w1, node-3)"
        )
    return worker_id


def worker_of(session_id: str) -> str | None:
    """The worker that owns ``session_id`` (``s_<worker>.<random>``), or ``None`` for a session
    id of a worker without an id (a single server)."""
    if not session_id.startswith("s_"):
        return None
    head, dot, _ = session_id[2:].partition(".")
    if not dot or not WORKER_ID_RE.match(head):
        return None
    return head


class Cluster:
    """This worker's place in a cluster: its id, whether it drains, and the drain itself.

    ``state`` is the app's state (``app.state.lipcore``): the drain watches its sessions.
    """

    def __init__(self, worker_id: str | None, state: Any, *, drain_timeout_s: float) -> None:
        self.worker_id = check_worker_id(worker_id) if worker_id else None
        self.state = state
        self.drain_timeout_s = drain_timeout_s
        self.draining = False
        self.drain_started: float | None = None

    @property
    def prefix(self) -> str:
        """``/w/<worker>`` (empty without a worker id)."""
        return f"/w/{self.worker_id}" if self.worker_id else ""

    @property
    def session_id_prefix(self) -> str:
        """What this worker's session ids start with after ``s_``."""
        return f"{self.worker_id}." if self.worker_id else ""

    def health(self) -> dict[str, Any]:
        """The per-worker fields of ``/healthz``."""
        return {"worker": self.worker_id, "draining": self.draining}

    def busy_sessions(self) -> int:
        """Sessions with an utterance running or queued, or audio still waiting to be sent."""
        n = 0
        for s in list(self.state.sessions.sessions.values()):
            if s._current is not None or s._turns or (s.outbox is not None and len(s.outbox)):
                n += 1
        return n

    async def drain(self) -> bool:
        """Stop taking sessions and wait (at most ``drain_timeout_s``) until no session speaks.
        Returns whether everything finished in time."""
        if not self.draining:
            self.draining = True
            self.drain_started = time.monotonic()
            logger.info("draining: no new sessions; waiting for %d speaking session(s)",
                        self.busy_sessions(), extra={"worker": self.worker_id})
        assert self.drain_started is not None
        deadline = self.drain_started + self.drain_timeout_s
        while self.busy_sessions():
            if time.monotonic() >= deadline:
                logger.warning("drain bound (%.0f s) reached with %d session(s) still speaking",
                               self.drain_timeout_s, self.busy_sessions(),
                               extra={"worker": self.worker_id})
                return False
            await asyncio.sleep(0.05)
        return True


def _json_body(status: int, body: dict[str, Any],
               extra: list[tuple[bytes, bytes]] | None = None) -> tuple[dict[str, Any], bytes]:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(data)).encode()), *(extra or [])]
    return {"type": "http.response.start", "status": status, "headers": headers}, data


class ClusterRouter:
    """ASGI middleware: the worker prefix, wrong-worker answers and the draining refusals
    (module docstring). Installed by :func:`lipcore.server.create_app` when the settings name a
    worker id."""

    def __init__(self, app: Any, cluster: Cluster) -> None:
        self.app = app
        self.cluster = cluster

    async def _http(self, send: Any, status: int, body: dict[str, Any],
                    extra: list[tuple[bytes, bytes]] | None = None) -> None:
        start, data = _json_body(status, body, extra)
        await send(start)
        await send({"type": "http.response.body", "body": data})

    async def _ws_refuse(self, receive: Any, send: Any, reason: str) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        # A close reason is at most 123 bytes; the path fits (ids are short).
        await send({"type": "websocket.close", "code": WRONG_WORKER_CLOSE,
                    "reason": reason.encode()[:123].decode(errors="ignore")})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or not self.cluster.worker_id:
            await self.app(scope, receive, send)
            return
        me = self.cluster.worker_id
        root = str(scope.get("root_path", "")).rstrip("/")
        path = str(scope["path"])
        rel = path[len(root):] if root and path.startswith(root) else path
        if rel.startswith("/w/"):
            target, slash, rest = rel[3:].partition("/")
            rest = slash + rest
            if target != me:
                detail = (f"this is worker {me!r}; the request names worker {target!r}: the "
                          "load balancer must route /w/<worker>/ paths to that worker")
                if scope["type"] == "websocket":
                    await self._ws_refuse(receive, send, f"wrong worker: owner is {target}")
                else:
                    await self._http(send, 421, {"error": "wrong_worker", "detail": detail,
                                                 "worker": me, "owner": target})
                return
        else:
            rest = rel
            m = _SESSION_PATH.match(rest)
            owner = worker_of(m.group(1)) if m else None
            if owner is not None and owner != me:
                location = f"{root}/w/{owner}{rest}"
                if scope["type"] == "websocket":
                    await self._ws_refuse(receive, send, f"connect to {location}")
                    return
                qs = scope.get("query_string", b"")
                if qs:
                    location += "?" + qs.decode("latin-1")
                await self._http(send, 307, {
                    "error": "other_worker",
                    "detail": f"session {m.group(1) if m else ''} lives on worker {owner!r}; "
                              f"repeat the request at {location}",
                    "worker": me, "owner": owner,
                }, [(b"location", location.encode("latin-1"))])
                return
        if (self.cluster.draining and scope["type"] == "http"
                and (rest.rstrip("/") in ("/session-2d", "/healthz"))
                and (scope["method"] == "POST" or rest.rstrip("/") == "/healthz")):
            if rest.rstrip("/") == "/healthz":
                await self._http(send, 503, {"ok": False, **self.cluster.health(),
                                             "sessions": len(self.cluster.state.sessions.sessions),
                                             "busy": self.cluster.busy_sessions()})
            else:
                await self._http(send, 503, {
                    "error": "draining",
                    "detail": f"worker {me!r} is shutting down and takes no new sessions; "
                              "create the session again (the balancer picks another worker)",
                }, [(b"retry-after", b"0"), (b"connection", b"close")])
            return
        # Everything below sees the prefixed path with the prefix as its root: the URLs it builds
        # from the request (ws_url, asset URLs) carry /w/<worker>, so they reach this worker.
        prefix = root + self.cluster.prefix
        scope = dict(scope)
        scope["root_path"] = prefix
        scope["lipcore.worker"] = self.cluster.prefix  # for URLs built from public_url
        scope["path"] = prefix + rest
        scope["raw_path"] = (prefix + rest).encode("latin-1")
        await self.app(scope, receive, send)


def run_server(app: Any, *, cluster: Cluster | None, **uvicorn_kwargs: Any) -> None:
    """Run ``app`` on uvicorn (``uvicorn.run``'s keyword arguments), with a drain on the first
    ``SIGTERM`` when ``cluster`` is given: no new sessions, health check 503, utterances in
    flight finish (at most ``cluster.drain_timeout_s``), then uvicorn's usual shutdown. A second
    ``SIGTERM`` or a ``SIGINT`` exits at once (uvicorn's behaviour)."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        loop: asyncio.AbstractEventLoop | None = None
        drain_task: asyncio.Future[None] | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # A signal handler runs between two bytecodes of the loop's thread: only schedule.
            if (cluster is None or sig != signal.SIGTERM or cluster.draining
                    or self.should_exit or self.loop is None):
                super().handle_exit(sig, frame)
                return
            self.loop.call_soon_threadsafe(self.start_drain)

        def start_drain(self) -> None:
            assert cluster is not None

            async def drain_then_exit() -> None:
                try:
                    await cluster.drain()
                finally:
                    self.should_exit = True  # uvicorn's shutdown: closes sockets, then lifespan

            self.drain_task = asyncio.ensure_future(drain_then_exit())

        async def startup(self, sockets: Any = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().startup(sockets=sockets)

    DrainingServer(uvicorn.Config(app, **uvicorn_kwargs)).run()


def cluster_of(state: Any) -> Cluster | None:
    """The app state's cluster (``None`` when the app was made without one)."""
    found: Cluster | None = getattr(state, "cluster", None)
    return found

