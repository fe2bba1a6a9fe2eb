"""Real ``lipcore serve`` workers behind a real HAProxy on loopback, for tests and benchmarks.

:class:`LocalCluster` starts N worker processes (``lipcore serve --worker-id wN``) and Debian's
``haproxy`` with the shipped ``deploy/haproxy.cfg`` (addresses passed in its environment
variables), waits until the balancer routes to every worker, and stops everything at the end.
Optionally a ``redis-server`` and moto's S3 server (``moto_server``) on loopback too.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = ["LocalCluster", "Worker", "free_port", "start_moto", "start_redis"]

REPO = Path(__file__).resolve().parents[2]
HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None,
               status: int = 200) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            r = httpx.get(url, timeout=1.0)
            if r.status_code == status:
                return
            last = r.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout} s (last: {last})")


@dataclass
class Worker:
    """One ``lipcore serve`` process."""

    worker_id: str
    port: int
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=log)
        _wait_http(self.url + "/healthz", timeout, self.proc)

    def kill(self) -> None:
        """``kill -9``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> None:
        """``SIGTERM`` (a drain, with a worker id)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class LocalCluster:
    """N workers (sharing ``data_dir`` unless avatar storage is shared another way) behind
    HAProxy; ``url`` is the balancer's address. Use as a context manager."""

    data_dir: Path
    workers_n: int = 3
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    check_inter: str = "200ms"
    separate_data_dirs: bool = False
    workers: list[Worker] = field(default_factory=list)
    haproxy: subprocess.Popen[bytes] | None = None
    port: int = 0
    logs: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="lipcore-cluster-")))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker(self, worker_id: str) -> Worker:
        return next(w for w in self.workers if w.worker_id == worker_id)

    def __enter__(self) -> LocalCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(haproxy).exists():
            raise RuntimeError("haproxy is not installed: run scripts/setup.sh --dev")
        if self.workers_n > 3:
            raise ValueError("deploy/haproxy.cfg names three workers")
        lipcore = str(Path(sys.executable).with_name("lipcore"))
        hap_env = dict(os.environ)
        for i in range(1, 4):
            hap_env[f"LIPCORE_W{i}"] = f"127.0.0.1:{free_port()}"
        for i in range(1, self.workers_n + 1):
            wid = f"w{i}"
            port = int(hap_env[f"LIPCORE_W{i}"].rsplit(":", 1)[1])
            data = self.data_dir / wid if self.separate_data_dirs else self.data_dir
            env = {**os.environ, **self.env}
            args = [lipcore, "serve", "--port", str(port), "--worker-id", wid,
                    "--data-dir", str(data), "--log-level", "warning", *self.extra_args]
            self.workers.append(Worker(wid, port, args, env, self.logs / f"{wid}.log"))
        procs = []
        for w in self.workers:  # start all at once: each spends seconds importing
            with w.log.open("ab") as log:
                w.proc = subprocess.Popen(w.args, env=w.env, stdout=log, stderr=log)
            procs.append(w)
        for w in procs:
            _wait_http(w.url + "/healthz", 90, w.proc)
        self.port = free_port()
        hap_env.update(LIPCORE_LISTEN=f"127.0.0.1:{self.port}",
                       LIPCORE_STATS=f"127.0.0.1:{free_port()}",
                       LIPCORE_CHECK_INTER=self.check_inter)
        with (self.logs / "haproxy.log").open("ab") as log:
            self.haproxy = subprocess.Popen([haproxy, "-db", "-f", str(HAPROXY_CFG)],
                                            env=hap_env, stdout=log, stderr=log)
        self.wait_routed()

    def wait_routed(self, timeout: float = 20.0) -> None:
        """Until every live worker answers through the balancer on its own /w/<id>/ path."""
        for w in self.workers:
            if w.alive:
                _wait_http(f"{self.url}/w/{w.worker_id}/healthz", timeout, self.haproxy)

    def stop(self) -> None:
        for w in self.workers:
            w.kill()
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(10)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    """Debian's ``redis-server`` on a free loopback port, no persistence → (process, url)."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(exe).exists():
        raise RuntimeError("redis-server is not installed: run scripts/setup.sh --dev")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, f"redis://127.0.0.1:{port}/0"
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    """moto's S3 server mode (``moto_server``, pip dev extras) on a free loopback port →
    (process, endpoint url)."""
    exe = Path(sys.executable).with_name("moto_server")
    if not exe.exists():
        raise RuntimeError("moto_server is not installed: pip install 'moto[server]' "
                           "(scripts/setup.sh --dev)")
    port = free_port()
    proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(url + "/moto-api/", 30, proc)
    except BaseException:
        proc.kill()
        raise
    return proc, url
