"""Realtime server under load: server-added latency, sessions per core, memory per session.

The server is the real thing (``create_app`` on uvicorn with uvloop and the websockets
implementation, as ``lipcore serve`` runs it) in its own process, pinned to ONE CPU. Its TTS is
a :class:`lipcore.testing.ReplayTTSSource` replaying speech pre-synthesised once with espeak-ng,
paced in real time (each 100 ms chunk is yielded when its audio would be due), so the numbers
measure the server, not a TTS. The clients are real WebSocket clients (``websockets``) in this
process, pinned to the other CPU: each session speaks the sentence, waits for
``utterance_end``, speaks it again, for as long as the step lasts.

What is measured, per step of concurrent speaking sessions:

* **server-added latency**: the replay source stamps each chunk with ``perf_counter()`` when it
  yields it; the server's writer stamps it again when ``send_bytes`` of its audio frame has
  returned (the bytes are in the socket); the difference covers viseme mapping, queueing and the
  send. Collected inside the server (``/metrics``).
* **event lag (server)**: the same write time minus the moment the chunk was *due* on the
  replay's real-time schedule: how late the server's event loop served the TTS's wake-up plus
  the added latency. This is the "p99 event lag < 20 ms" criterion.
* **event lag (client)**: receive time in the client minus (time the client sent ``speak`` +
  the frame's ``pts_ms``): what a client sees, including the ``speak`` round trip and the
  client's own scheduling (both processes read the same CLOCK_MONOTONIC).
* a machine-speed reference, once before the sweep on the server's core: CPU µs per chunk of
  lipcore's own per-chunk work alone (replay unpaced, mapping, encoding), so that capacities
  measured on different (VM) cores can be compared.
* event-loop lag of the server (a 10 ms timer's oversleep), the server's CPU use (fraction of
  its one core), audio delivered per session per second (1.0 = keeps up with real time), and
  RSS, from which memory per session is the slope over the steps.
* **lag while avatars build**: a step of speaking sessions measured twice on one server, idle
  and while three avatar uploads (``grace_hopper.jpg``, the server's real build path) are
  being built (one building, two waiting under the build limit), with ``/healthz`` polled
  every 50 ms from the client; once with builds in worker processes (the default) and once in
  threads of the server (``build_isolation="thread"``, how builds ran before) for comparison.

The server runs with the hardening of ``lipcore serve`` (``uvicorn_options``: the guarded HTTP
protocol, the security middleware), with the per-address connection cap off: every benchmark
client comes from 127.0.0.1.

Run: ``.venv/bin/python benchmarks/bench_server.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import pickle
import random
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import _report

ROOT = Path(__file__).resolve().parents[1]
TEXT = (
    "The quick brown fox jumps over the lazy dog, and then it runs back home "
    "to tell everybody about it."
)
AVATAR_ID = "a_bench_server_avatar"
LAG_TARGET_MS = 20.0
ADDED_TARGET_MS = 5.0


# --------------------------------------------------------------------------- helpers


def _raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _pin(cpus: set[int]) -> set[int]:
    available = os.sched_getaffinity(0)
    want = cpus & available
    if want:
        os.sched_setaffinity(0, want)
    return os.sched_getaffinity(0)


def _summary(samples: Sequence[float]) -> dict[str, float]:
    if not samples:
        return {"count": 0}
    s = sorted(samples)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))], 3)

    return {
        "count": len(s),
        "p50_ms": q(0.5),
        "p90_ms": q(0.9),
        "p99_ms": q(0.99),
        "max_ms": round(s[-1], 3),
        "total_ms": round(sum(s), 3),
    }


def _runqueue_wait_s() -> float:
    """Seconds this (main) thread spent runnable but waiting for a CPU: other processes on
    the server's core take that time from it (``/proc/self/schedstat``)."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------- server process


def serve(port: int, data_dir: Path, speech_file: Path, cpu: int, chunk_ms: float) -> None:
    """The server process: create_app + replay TTS on uvicorn, pinned to one CPU."""
    import uvicorn
    import uvloop
    from fastapi import FastAPI

    from lipcore.server import ServerSettings, create_app
    from lipcore.server.app import tune_gc
    from lipcore.server.metrics import LatencyStats
    from lipcore.server.security import uvicorn_options
    from lipcore.testing import ReplayTTSSource, testing_engine

    _raise_fd_limit()
    isolation = os.environ.get("LIPCORE_BENCH_BUILD_ISOLATION", "process")
    if isolation == "process":
        # Build workers fork from the fork server: start it before this process is pinned, so
        # that builds run on any core, as they would on an unpinned server.
        from multiprocessing import forkserver

        from lipcore.server.avatars import _pool_context

        _pool_context()
        forkserver.ensure_running()
    _pin({cpu})
    chunks = pickle.loads(speech_file.read_bytes())
    tts = {
        "replay": ReplayTTSSource(chunks, realtime=True, chunk_ms=chunk_ms, voices=_voices()),
        # the same speech unpaced: the machine-speed reference (see _reference_us)
        "unpaced": ReplayTTSSource(chunks, realtime=False, chunk_ms=chunk_ms, voices=_voices()),
    }
    engine = testing_engine(tts=tts, default_tts="replay")
    settings = ServerSettings(
        data_dir=data_dir,
        max_sessions=100_000,
        serve_web=False,
        session_idle_timeout_s=3600,
        reconnect_grace_s=3600,
        max_connections_per_ip=0,  # every benchmark client is on 127.0.0.1
        max_pending_builds=8,
        build_isolation=isolation,  # type: ignore[arg-type]
        # bench_cluster runs this server as routed workers behind HAProxy
        worker_id=os.environ.get("LIPCORE_WORKER_ID") or None,
    )
    app = create_app(engine, settings)
    state = app.state.lipcore
    # Keep every sample of a step (the product keeps the last 20 000).
    state.sessions.latency = LatencyStats(2_000_000)
    state.sessions.lag = LatencyStats(2_000_000)
    loop_lag = LatencyStats()
    gc_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        # Garbage-collector pauses stop the event loop like any other work.
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses[info["generation"]].append((time.perf_counter() - gc_started[0]) * 1e3)

    gc.callbacks.append(on_gc)
    reference_us = [0.0]

    host = FastAPI(lifespan=app.router.lifespan_context)  # stops build workers at the end

    @host.get("/bench/stats")
    async def stats() -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "latency": state.sessions.latency.summary(),
            "lag": state.sessions.lag.summary(),
            "loop_lag": loop_lag.summary(),
            "gc": {g: _summary(v) for g, v in gc_pauses.items()},
            "rss_kb": _rss_kb(),
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "wait_s": _runqueue_wait_s(),
            "sessions": len(state.sessions.sessions),
            "connected": sum(1 for s in state.sessions.sessions.values() if s.connected),
            "affinity": sorted(os.sched_getaffinity(0)),
            "reference_us_per_chunk": reference_us[0],
        }

    @host.post("/bench/reset")
    async def reset() -> dict[str, bool]:
        for stats_ in (state.sessions.latency, state.sessions.lag, loop_lag):
            stats_.samples.clear()
        for pauses in gc_pauses.values():
            pauses.clear()
        return {"ok": True}

    profile = os.environ.get("LIPCORE_BENCH_PROFILE")
    if profile:  # where the server's CPU goes, during the measured window only
        import cProfile

        # CPU time, not wall time: the loop's idle wait counts for nothing.
        prof = cProfile.Profile(time.process_time)

        @host.post("/bench/profile")
        async def profile_switch(on: bool) -> dict[str, bool]:
            if on:
                prof.enable()
            else:
                prof.disable()
                prof.dump_stats(profile)
            return {"ok": True}

    host.mount("", app)

    async def probe() -> None:
        # How late a 10 ms timer fires: the event loop's own lag.
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            loop_lag.add((time.perf_counter() - t - 0.01) * 1000.0)

    if os.environ.get("LIPCORE_BENCH_NO_GC_TUNING") is None:
        tune_gc()  # as `lipcore serve` does
    if os.environ.get("LIPCORE_BENCH_GC_THRESHOLD"):  # experiments: "gen0,gen1,gen2"
        gc.set_threshold(*(int(x) for x in os.environ["LIPCORE_BENCH_GC_THRESHOLD"].split(",")))

    async def main() -> None:
        ws_impl = os.environ.get("LIPCORE_BENCH_WS", "websockets")  # as `lipcore serve`
        config = uvicorn.Config(
            host,
            host="127.0.0.1",
            port=port,
            ws=ws_impl,  # type: ignore[arg-type]
            ws_per_message_deflate=False,
            log_level="warning",
            lifespan="on",
            backlog=4096,
            **uvicorn_options(settings),  # as `lipcore serve`: header timeout, connection caps
        )
        server = uvicorn.Server(config)
        reference_us[0] = await _reference_us(engine)
        task = asyncio.create_task(probe())
        await server.serve()
        task.cancel()

    uvloop.run(main())


async def _reference_us(engine: Any, rounds: int = 3, utterances: int = 40) -> float:
    """Machine-speed reference: CPU µs per chunk of lipcore's own per-chunk work alone on the
    server's core (the TTS replay unpaced, viseme mapping, the inline frame's encoding), best of
    ``rounds``. VM cores differ from day to day (the same code has measured 2× apart here);
    capacities of two runs compare through this figure."""
    from lipcore.server.protocol import encode_visemes, pack_audio_visemes

    best = float("inf")
    for _ in range(rounds):
        n = 0
        t0 = time.process_time()
        for _ in range(utterances):
            utt = await engine.utterance(TEXT, voice="en", tts="unpaced", record=False)
            async for step in utt:
                n += 1
                frames, provisional = step.frames, bool(step.provisional and not step.frames)
                event = encode_visemes(1, step.provisional if provisional else frames,
                                       provisional=provisional)
                if step.chunk.audio:
                    pack_audio_visemes(event, step.chunk.audio, utterance=1,
                                       pts_ms=step.chunk.pts_ms)
        best = min(best, (time.process_time() - t0) / max(n, 1) * 1e6)
    return round(best, 1)


def _voices() -> Any:
    from lipcore.interfaces import Voice

    return (Voice(id="en", name="English (replayed espeak-ng)", language="en"),)


# --------------------------------------------------------------------------- client side


class Client:
    """All client sessions of this process and what they measured."""

    def __init__(self, base: str, sample_rate: int, mode: str = "inline") -> None:
        self.base = base
        self.sample_rate = sample_rate
        self.ws_base = "ws://" + base.split("://", 1)[1]
        self.measuring = False
        self.lag: list[float] = []
        self.audio_s = 0.0
        self.messages = 0
        self.errors = 0
        self.closed = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.stop = asyncio.Event()
        self.loop_lag: list[float] = []
        self.mode = mode

    async def session(self, http: Any, ready: asyncio.Event, stagger_s: float) -> None:
        from websockets.asyncio.client import connect

        r = await http.post(
            f"{self.base}/session-2d", json={"avatar_id": AVATAR_ID, "voice_id": "en"}
        )
        r.raise_for_status()
        ws_url = r.json()["ws_url"] + "&visemes=" + self.mode
        speak = json.dumps({"type": "speak", "text": TEXT})
        unpack = struct.Struct("<d").unpack_from
        try:
            async with connect(
                ws_url,
                compression=None,
                max_size=None,
                ping_interval=None,
                open_timeout=60,
                close_timeout=1,
            ) as ws:
                await ws.recv()  # hello
                ready.set()
                await asyncio.sleep(random.uniform(0.0, stagger_s))
                while not self.stop.is_set():
                    t_speak = time.perf_counter()
                    await ws.send(speak)
                    while True:
                        msg = await ws.recv()
                        now = time.perf_counter()
                        if self.measuring:
                            self.messages += 1
                        if isinstance(msg, bytes):
                            if self.measuring:
                                pts_ms = unpack(msg, 8)[0]
                                self.lag.append((now - t_speak) * 1000.0 - pts_ms)
                                pcm = len(msg) - 16
                                if msg[0] == 3:  # audio with its viseme event in front
                                    pcm -= 4 + int.from_bytes(msg[16:20], "little")
                                self.audio_s += pcm / 2 / self.sample_rate
                        elif '"utterance_end"' in msg:
                            break
                        elif '"type":"error"' in msg:
                            self.errors += 1
                            break
        except Exception:
            if not self.stop.is_set():
                self.closed += 1

    async def probe(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            if self.measuring:
                self.loop_lag.append((time.perf_counter() - t - 0.01) * 1000.0)

    async def grow(self, http: Any, n: int, stagger_s: float) -> None:
        """Add sessions until ``n`` are speaking (connected in batches)."""
        while len(self.tasks) < n:
            batch = min(50, n - len(self.tasks))
            events = [asyncio.Event() for _ in range(batch)]
            for ev in events:
                self.tasks.append(asyncio.create_task(self.session(http, ev, stagger_s)))
            await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in events)), 120)

    def reset(self) -> None:
        self.lag.clear()
        self.loop_lag.clear()
        self.audio_s = 0.0
        self.messages = 0


def _sample_rate(chunks: Sequence[Any]) -> int:
    return int(chunks[0].sample_rate) if chunks else 22050


async def run_client(
    base: str,
    steps: list[int],
    warm_s: float,
    window_s: float,
    sample_rate: int,
    *,
    profile: bool = False,
    mode: str = "inline",
) -> dict[str, Any]:
    """Grow the sessions step by step and measure each step's window (with the server's
    profiler on during the windows when ``profile``); ``mode``: the clients' viseme form."""
    import httpx

    client = Client(base, sample_rate, mode)
    probe = asyncio.create_task(client.probe())
    results: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=20)) as http:
        base_stats = (await http.get(f"{base}/bench/stats")).json()
        for n in steps:
            t0 = time.perf_counter()
            try:
                await client.grow(http, n, stagger_s=1.0)
            except TimeoutError:
                print(f"{n} sessions: could not even connect them within 2 minutes", flush=True)
                results.append({"sessions": n, "connect_failed": True})
                break
            ramp_s = time.perf_counter() - t0
            await asyncio.sleep(warm_s)
            await http.post(f"{base}/bench/reset")
            client.reset()
            before = (await http.get(f"{base}/bench/stats")).json()
            client.measuring = True
            if profile:
                await http.post(f"{base}/bench/profile", params={"on": "true"})
            t_start = time.perf_counter()
            await asyncio.sleep(window_s)
            client.measuring = False
            if profile:
                await http.post(f"{base}/bench/profile", params={"on": "false"})
            wall = time.perf_counter() - t_start
            after = (await http.get(f"{base}/bench/stats")).json()
            cpu = (after["cpu_s"] - before["cpu_s"]) / wall
            wait = (after["wait_s"] - before["wait_s"]) / wall
            chunks = after["latency"].get("count", 0)
            row = {
                "sessions": n,
                "connected": after["connected"],
                "ramp_s": round(ramp_s, 1),
                "added": after["latency"],
                "lag": after["lag"],
                "loop_lag": after["loop_lag"],
                "gc": after["gc"],
                "client_lag": _summary(client.lag),
                "client_loop_lag": _summary(client.loop_lag),
                "wall_s": round(wall, 3),
                "server_cpu": round(cpu, 3),
                "cpu_wait": round(wait, 3),
                "load": round(os.getloadavg()[0], 2),
                "cpu_us_per_chunk": round(cpu * wall / chunks * 1e6) if chunks else None,
                "rss_kb": after["rss_kb"],
                "audio_rt": round(client.audio_s / wall / n, 3),
                "msgs_per_s": round(client.messages / wall),
                "errors": client.errors,
                "dropped_connections": client.closed,
            }
            results.append(row)
            print(json.dumps(row), flush=True)
            lag_p99 = row["lag"].get("p99_ms", float("inf"))
            if n >= 100 and (lag_p99 > 10 * LAG_TARGET_MS or row["audio_rt"] < 0.9):
                break  # far past saturation: larger steps only take longer to say so
        client.stop.set()
        probe.cancel()
        for t in client.tasks:
            t.cancel()
        await asyncio.gather(*client.tasks, return_exceptions=True)
    return {"baseline": base_stats, "steps": results}


async def run_build_lag(base: str, n: int, warm_s: float, window_s: float, sample_rate: int,
                        photo: bytes, builds: int = 3) -> dict[str, Any]:
    """``n`` speaking sessions measured for a window with no build, then for a window while
    ``builds`` avatar uploads are being built; ``/healthz`` is polled every 50 ms."""
    import httpx

    client = Client(base, sample_rate, "inline")
    probe = asyncio.create_task(client.probe())
    health: list[float] = []
    measuring_health = [False]

    async def poll_health(http: Any) -> None:
        while True:
            t = time.perf_counter()
            await http.get(f"{base}/healthz")
            if measuring_health[0]:
                health.append((time.perf_counter() - t) * 1000.0)
            await asyncio.sleep(0.05)

    async def upload(http: Any) -> int:
        r = await http.post(f"{base}/avatarize-2d",
                            files={"hero_image": ("grace_hopper.jpg", photo)}, timeout=600)
        return int(r.status_code)

    rows: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=20)) as http:
        await client.grow(http, n, stagger_s=1.0)
        poller = asyncio.create_task(poll_health(http))
        uploads: list[asyncio.Task[int]] = []
        for label in ("no build", f"{builds} builds"):
            if label != "no build":
                uploads = [asyncio.create_task(upload(http)) for _ in range(builds)]
                await asyncio.sleep(1.0)  # the first build is under way
            else:
                await asyncio.sleep(warm_s)
            await http.post(f"{base}/bench/reset")
            client.reset()
            health.clear()
            client.measuring = measuring_health[0] = True
            t0 = time.perf_counter()
            await asyncio.sleep(window_s)
            client.measuring = measuring_health[0] = False
            wall = time.perf_counter() - t0
            after = (await http.get(f"{base}/bench/stats")).json()
            rows[label] = {
                "sessions": n, "lag": after["lag"], "loop_lag": after["loop_lag"],
                "healthz": _summary(health), "audio_rt": round(client.audio_s / wall / n, 3),
                "builds_done": sum(1 for u in uploads if u.done()),
            }
            print(label, json.dumps(rows[label]), flush=True)
        poller.cancel()
        for u in uploads:
            u.cancel()
        client.stop.set()
        probe.cancel()
        for t in client.tasks:
            t.cancel()
        await asyncio.gather(*client.tasks, *uploads, poller, return_exceptions=True)
    return rows


# --------------------------------------------------------------------------- orchestration


async def _record_speech() -> list[Any]:
    from lipcore.engine import Engine

    source = Engine().tts("espeak")
    return [c async for c in source.synthesize(TEXT, voice="en")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _write_avatar(data_dir: Path) -> None:
    from lipcore.testing import write_test_avatar

    write_test_avatar(data_dir, AVATAR_ID)


# Where the server's CPU goes: cumulative time of these functions in a cProfile of the server.
_PARTS = [
    (
        "viseme mapping (lipcore mapper: push/finish)",
        "default_plugins/mapper.py",
        ("push", "finish"),
    ),
    ("WebSocket sends (uvicorn + websockets)", "websockets_impl.py", ("asgi_send",)),
    ("JSON encoding of events", "json/encoder.py", ("encode",)),
    (
        "viseme event encoding (lipcore)",
        "server/protocol.py",
        ("encode_visemes", "encode_viseme"),
    ),
]


def profile_breakdown(path: Path) -> list[tuple[str, float]]:
    """Shares of the profiled server's busy time (%), from its cProfile dump."""
    import pstats

    st = pstats.Stats(str(path))
    raw: dict[Any, Any] = st.stats  # type: ignore[attr-defined]
    # The profile's clock is CPU time, so the sum of all own times is the CPU the server used.
    busy = sum(tt for (_c, _n, tt, _ct, _callers) in raw.values())
    shares: list[tuple[str, float]] = []
    for label, file_part, funcs in _PARTS:
        cum = sum(
            ct
            for (file, _l, func), (_c, _n, _t, ct, _cl) in raw.items()
            if file.endswith(file_part) and func in funcs
        )
        shares.append((label, 100.0 * cum / busy if busy else 0.0))
    own = sum(
        tt
        for (file, _l, _f), (_c, _n, tt, _ct, _cl) in raw.items()
        if file.endswith("server/sessions.py")
    )
    shares.append(("lipcore session code (sessions, outbox; own time)", 100.0 * own / busy))
    shares.append(
        (
            "everything else (asyncio/uvloop, TTS replay timers, engine glue)",
            max(0.0, 100.0 - sum(v for _, v in shares)),
        )
    )
    return shares


def _gc_share(r: dict[str, Any]) -> str:
    """The share of the measured window the garbage collector had the loop stopped."""
    total = sum(g.get("total_ms", 0.0) for g in r["gc"].values())
    wall = r.get("wall_s")
    return f"{100 * total / (1000 * wall):.0f} %" if wall else "–"


def _fmt(stats: dict[str, Any], key: str) -> str:
    v = stats.get(key)
    return "–" if v is None else f"{v:.2f}"


def report(
    res: dict[str, Any],
    *,
    batched: dict[str, Any] | None = None,
    quick: bool,
    audio_s: float,
    cpus: str,
    breakdown: list[tuple[str, float]] | None,
    profile_n: int,
    chunk_ms: float = 100.0,
    build_lag: dict[str, Any] | None = None,
) -> None:
    steps = [r for r in res["steps"] if not r.get("connect_failed")]
    unreachable = [r["sessions"] for r in res["steps"] if r.get("connect_failed")]
    rows = []
    for r in steps:
        ok = r["lag"].get("p99_ms", 1e9) < LAG_TARGET_MS and r["audio_rt"] > 0.95
        rows.append(
            [
                r["sessions"],
                _fmt(r["added"], "p50_ms"),
                _fmt(r["added"], "p99_ms"),
                _fmt(r["lag"], "p50_ms"),
                _fmt(r["lag"], "p99_ms"),
                _fmt(r["client_lag"], "p50_ms"),
                _fmt(r["client_lag"], "p99_ms"),
                _fmt(r["loop_lag"], "p99_ms"),
                f"{max((g.get('max_ms', 0.0) for g in r['gc'].values()), default=0.0):.0f}",
                _gc_share(r),
                f"{100 * r['server_cpu']:.0f} %",
                f"{100 * r['cpu_wait']:.0f} %",
                r["cpu_us_per_chunk"] if r["cpu_us_per_chunk"] is not None else "–",
                f"{r['audio_rt']:.2f}",
                r["msgs_per_s"],
                f"{r['rss_kb'] / 1024:.0f}",
                f"{r['load']:.1f}",
                "✅" if ok else "❌",
            ]
        )
    passing = [
        r["sessions"]
        for r in steps
        if r["lag"].get("p99_ms", 1e9) < LAG_TARGET_MS and r["audio_rt"] > 0.95
    ]
    # What one core holds: the largest step such that it and every smaller step kept the lag
    # target (a step that passes above a failed one is luck of the window, not capacity).
    held = 0
    for r in sorted(steps, key=lambda r: r["sessions"]):
        if r["sessions"] not in passing:
            break
        held = r["sessions"]
    failing = [r["sessions"] for r in steps if r["sessions"] > held] + unreachable
    breaks = min(failing) if failing else None
    # Steps above that which passed anyway (the lag flips around the target there): said too.
    lucky = [n for n in passing if n > held]

    at100 = next((r for r in steps if r["sessions"] == 100), None)
    base_rss = res["baseline"]["rss_kb"]
    # Memory per session: least-squares slope of RSS over the number of sessions.
    xs = [0.0] + [float(r["sessions"]) for r in steps]
    ys = [float(base_rss)] + [float(r["rss_kb"]) for r in steps]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    slope_kb = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0
    last = steps[-1] if steps else None
    per_last_kb = (last["rss_kb"] - base_rss) / last["sessions"] if last else 0.0

    body = [
        "Server: `create_app` on uvicorn (uvloop, websockets, no per-message deflate, "
        f"`tune_gc()`) pinned "
        f"to CPU {cpus.split('/')[0]}; clients: `websockets` in another process on CPU "
        f"{cpus.split('/')[1]}. TTS: espeak-ng speech ({audio_s:.1f} s, 22.05 kHz) replayed in "
        f"real time in {chunk_ms:g} ms chunks; every session speaks it again as soon as it ends. "
        "Clients ask for `visemes=inline` (as lipcore's web and Flutter clients do): one binary "
        "frame per chunk carrying its audio and its viseme event (kind 3). GC: `tune_gc()` "
        "thresholds (100, 5, 10000).",
        "",
    ]
    ref = res["baseline"].get("reference_us_per_chunk")
    if ref:
        body += [
            f"**Machine-speed reference**: lipcore's per-chunk work alone (the replay unpaced, "
            f"viseme mapping, the inline frame's encoding) took **{ref:g} µs** of CPU per chunk "
            "on the server's core before the sweep. The *CPU µs/chunk* column below adds the "
            "event loop, the sends and the collector to it. VM cores here differ from one "
            "machine to the next by up to 2× for the same code, so capacities of runs on "
            "different machines compare through this figure (capacity scales about inversely "
            "with it).",
            "",
        ]
    body += [
        _report.table(
            [
                "sessions",
                "added p50 ms",
                "added p99 ms",
                "lag p50 ms",
                "lag p99 ms",
                "client lag p50 ms",
                "client lag p99 ms",
                "loop lag p99 ms",
                "longest GC pause ms",
                "GC time",
                "server CPU",
                "CPU taken by others",
                "CPU µs/chunk",
                "audio/real time",
                "msgs/s",
                "RSS MiB",
                "load avg",
                "p99 lag < 20 ms",
            ],
            rows,
        ),
        "",
        "*added*: chunk yielded by the TTS → its frame written to the socket (server stamps). "
        "*lag*: chunk due on the real-time schedule → frame written (server). *client lag*: "
        "frame received − (speak sent + pts). *audio/real time*: audio seconds each session "
        "received per second (1.00 = keeps up). *CPU taken by others*: share of the time the "
        "server was runnable but waited for its core (other processes on it; "
        "`/proc/thread-self/schedstat`); above a few % the lag columns measure the machine, "
        "not the server.",
        "",
    ]
    targets: list[list[object]] = []
    if at100 is not None:
        p99 = at100["added"].get("p99_ms", float("inf"))
        targets.append(
            [
                "server-added latency p99 at 100 sessions",
                f"< {ADDED_TARGET_MS:g} ms",
                f"{p99:.2f} ms (p50 {at100['added'].get('p50_ms', 0):.2f} ms)",
                "✅" if p99 < ADDED_TARGET_MS else "❌",
            ]
        )
    targets.append(
        [
            "speaking sessions one server core holds (p99 lag < 20 ms)",
            "≥ 500",
            f"{held}"
            + (f" (breaks at {breaks})" if breaks else " (largest step)")
            + (f"; {', '.join(map(str, lucky))} passed too, above a failed step" if lucky else ""),
            "✅" if held >= 500 else "❌",
        ]
    )
    # A CPU-bound projection that contention does not distort: a core's second divided by the
    # CPU one speaking session costs per second, at the largest step that kept the lag target
    # (the cost per chunk falls as load grows: the loop serves more per wake-up).
    kept = [r for r in steps if r["sessions"] <= held and r["cpu_us_per_chunk"]]
    projected = None
    cost = None
    if kept:
        cost = kept[-1]["cpu_us_per_chunk"]
        per_session_s = cost * 1e-6 * (1000.0 / chunk_ms)
        projected = int(0.8 / per_session_s)  # 80 % busy leaves room for the lag target
        targets.append(
            [
                "projection: sessions per core at 80 % CPU (from CPU µs/chunk)",
                "≥ 500",
                f"{projected} ({cost} µs CPU per {chunk_ms:g} ms chunk at "
                f"{kept[-1]['sessions']} sessions)",
                "✅" if projected >= 500 else "❌",
            ]
        )
    targets.append(
        [
            "memory per session (RSS slope)",
            "bounded, reported",
            f"{slope_kb:.0f} KiB (last step {per_last_kb:.0f} KiB/session)",
            "–",
        ]
    )
    body += [_report.table(["target", "goal", "measured", "met"], targets), ""]
    if batched is not None:
        # The two viseme forms side by side: same server build, same machine, one run.
        inline_by_n = {r["sessions"]: r for r in steps}
        cmp_rows = []
        for r in batched["steps"]:
            if r.get("connect_failed"):
                continue
            for mode, row in (("inline (1 message/chunk)", inline_by_n.get(r["sessions"])),
                              ("batched (2 messages/chunk)", r)):
                if row is None:
                    continue
                ok = row["lag"].get("p99_ms", 1e9) < LAG_TARGET_MS and row["audio_rt"] > 0.95
                cmp_rows.append([
                    row["sessions"], mode, f"{100 * row['server_cpu']:.0f} %",
                    row["cpu_us_per_chunk"] if row["cpu_us_per_chunk"] is not None else "–",
                    _fmt(row["lag"], "p99_ms"), _gc_share(row), "✅" if ok else "❌",
                ])  # fmt: skip
        body += [
            "The viseme forms side by side (the batched sweep ran right after the inline one, "
            "on the same machine):",
            "",
            _report.table(
                ["sessions", "viseme form", "server CPU", "CPU µs/chunk", "lag p99 ms",
                 "GC time", "p99 lag < 20 ms"],
                cmp_rows,
            ),
            "",
        ]
    if breakdown:
        body += [
            f"Where the server's CPU goes (cProfile of the server at {profile_n} sessions, "
            "share of its busy time). cProfile adds a cost to every Python call, so it "
            "over-weights call-heavy Python (the mapper, lipcore's session code) against C "
            "(uvloop, the socket writes); the machine-speed reference above measures "
            "lipcore's own per-chunk work without a profiler:",
            "",
            _report.table(
                ["part", "share of server CPU"], [[label, f"{v:.0f} %"] for label, v in breakdown]
            ),
            "",
        ]
    verdict = f"One server core kept {held} sessions speaking in real time with p99 event lag " + (
        f"under {LAG_TARGET_MS:g} ms" + (f"; at {breaks} it did not" if breaks else "") + ". "
    )
    if lucky:
        verdict += (
            f"Above that the result flips from window to window: {', '.join(map(str, lucky))} "
            f"sessions passed although {breaks} did not (a lag burst of the shared VM or a "
            "collector pause inside a 10 s window decides it); repeated runs differ by about a "
            "step. "
        )
    if projected is not None and cost is not None:
        ref = res["baseline"].get("reference_us_per_chunk")
        verdict += (
            f"There each speaking session cost the server {cost / chunk_ms:.2f} ms of CPU per "
            "second of speech"
            + (
                f", {100 * ref / cost:.0f} % of it lipcore's own per-chunk work (replay, "
                "mapping, encoding: the machine-speed reference) and the rest the event loop, "
                "the WebSocket sends and the collector"
                if ref
                else ""
            )
            + "; past the core's capacity the lag is queueing in the event loop (loop lag, "
            "server CPU). "
        )
    stolen = max((r["cpu_wait"] for r in steps), default=0.0)
    if stolen > 0.05:
        verdict += (
            f"Other processes took up to {100 * stolen:.0f} % of the server's core during this "
            "run, so its lag figures are pessimistic."
        )
    else:
        share = "under 1 %" if stolen < 0.01 else f"at most {100 * stolen:.0f} %"
        verdict += (
            f"Other processes hardly touched the server's core (CPU taken by others {share} in "
            "every window)."
        )
    if quick:
        verdict = "Quick smoke run (small steps, short windows): not the figure to quote. " + (
            verdict
        )
    body += [verdict]
    if build_lag:
        brows = []
        for isolation, rows_ in build_lag.items():
            for label, r in rows_.items():
                brows.append([
                    r["sessions"], isolation, label, _fmt(r["lag"], "p50_ms"),
                    _fmt(r["lag"], "p99_ms"), _fmt(r["loop_lag"], "p99_ms"),
                    _fmt(r["healthz"], "p50_ms"), _fmt(r["healthz"], "p99_ms"),
                    _fmt(r["healthz"], "max_ms"), f"{r['audio_rt']:.2f}",
                ])  # fmt: skip
        body += [
            "",
            "**Lag while avatars build**: the same sessions measured with no build and while "
            "three uploads of `grace_hopper.jpg` were being built (one at a time under "
            "`build_concurrency=1`, the others waiting), `/healthz` polled every 50 ms by the "
            "client. *process*: builds in a fresh worker process each (the default; the worker "
            "is not pinned to the server's core, it shares the other core with the clients); "
            "*thread*: in a thread of the server (`build_isolation=\"thread\"`, how builds ran "
            "before), on the server's one core.",
            "",
            _report.table(
                ["sessions", "builds in", "window", "lag p50 ms", "lag p99 ms",
                 "loop lag p99 ms", "/healthz p50 ms", "/healthz p99 ms", "/healthz max ms",
                 "audio/real time"],
                brows,
            ),
        ]
    _report.write("server", "Realtime server: latency, sessions per core, memory", "\n".join(body))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    ap.add_argument(
        "--steps",
        type=str,
        default=None,
        help="comma-separated session counts (default 50,100,...,1000)",
    )
    ap.add_argument("--window", type=float, default=None, help="seconds measured per step")
    ap.add_argument(
        "--chunk-ms",
        type=float,
        default=100.0,
        help="audio per TTS chunk (default 100 ms; ElevenLabs-like streams send ~200 ms)",
    )
    ap.add_argument(
        "--no-profile", action="store_true", help="skip the profiled run (CPU breakdown)"
    )
    ap.add_argument("--no-build-lag", action="store_true",
                    help="skip the lag-while-avatars-build step")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--speech", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cpu", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.port, args.data_dir, args.speech, args.cpu, args.chunk_ms)
        return

    _raise_fd_limit()
    if args.steps:
        steps = [int(x) for x in args.steps.split(",")]
    else:
        steps = [10, 30] if args.quick else [50, 100, 150, 200, 300, 400, 450, 500, 600, 700,
                                             800, 900, 1000]
    window = args.window or (3.0 if args.quick else 10.0)
    warm = 1.5 if args.quick else 3.0
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = cpus[0], cpus[-1]

    chunks = asyncio.run(_record_speech())
    rate = _sample_rate(chunks)
    audio_s = sum(len(c.audio) for c in chunks) / 2 / rate
    profile_n = 10 if args.quick else 30
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        tmpdir = Path(tmp)
        speech = tmpdir / "speech.pkl"
        speech.write_bytes(pickle.dumps(chunks))
        data_dir = tmpdir / "data"
        _write_avatar(data_dir)
        res = _with_server(
            data_dir,
            speech,
            server_cpu,
            client_cpu,
            lambda base: run_client(base, steps, warm, window, rate, mode="inline"),
            args.chunk_ms,
        )
        # The same server with the clients on the two-message form, side by side.
        compare_steps = [10, 30] if args.quick else [300, 400, 450, 500]
        batched = _with_server(
            data_dir,
            speech,
            server_cpu,
            client_cpu,
            lambda base: run_client(base, compare_steps, warm, window, rate, mode="batched"),
            args.chunk_ms,
        )
        breakdown = None
        if not args.no_profile:
            prof = tmpdir / "server.prof"
            _with_server(
                data_dir,
                speech,
                server_cpu,
                client_cpu,
                lambda base: run_client(base, [profile_n], warm, window / 2, rate, profile=True),
                args.chunk_ms,
                profile=prof,
            )
            breakdown = profile_breakdown(prof)
        build_lag: dict[str, Any] | None = None
        if not args.no_build_lag:
            import matplotlib.cbook

            photo = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg",
                                                          asfileobj=False)).read_bytes()
            n_build = 10 if args.quick else 100
            build_lag = {}
            for isolation in ("process", "thread"):
                os.environ["LIPCORE_BENCH_BUILD_ISOLATION"] = isolation
                build_lag[isolation] = _with_server(
                    data_dir, speech, server_cpu, client_cpu,
                    lambda base: run_build_lag(base, n_build, warm, window, rate, photo),
                    args.chunk_ms,
                )
            os.environ.pop("LIPCORE_BENCH_BUILD_ISOLATION", None)
    report(
        res,
        batched=batched,
        quick=args.quick,
        audio_s=audio_s,
        cpus=f"{server_cpu}/{client_cpu}",
        breakdown=breakdown,
        profile_n=profile_n,
        chunk_ms=args.chunk_ms,
        build_lag=build_lag,
    )


def _with_server(
    data_dir: Path,
    speech: Path,
    server_cpu: int,
    client_cpu: int,
    run: Any,
    chunk_ms: float,
    profile: Path | None = None,
) -> Any:
    """Start the server process, run ``run(base_url)`` (a coroutine) as the client in this
    process pinned to ``client_cpu``, stop the server."""
    import httpx
    import uvloop

    port = _free_port()
    env = dict(os.environ)
    if profile is not None:
        env["LIPCORE_BENCH_PROFILE"] = str(profile)
    proc = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--serve",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--speech",
            str(speech),
            "--cpu",
            str(server_cpu),
            "--chunk-ms",
            str(chunk_ms),
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the benchmark server did not start")
            time.sleep(0.2)
        mask = os.sched_getaffinity(0)
        _pin({client_cpu})
        try:
            return uvloop.run(run(base))
        finally:
            os.sched_setaffinity(0, mask)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
