"""A real lipcore server on loopback (uvicorn with the websockets implementation, in a thread)
and helpers to talk to it with real httpx and websockets clients."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from lipcore.server import ServerSettings, create_app
from lipcore.server.protocol import (
    AUDIO_VISEMES_KIND,
    split_audio_visemes,
    unpack_frame,
    validate_server_message,
)
from lipcore.testing import (
    FailingTTSSource,
    ReplayTTSSource,
    testing_engine,
    write_test_avatar,
)

FAKE_AVATAR_ID = "a_prebuilt_test_avatar"


@dataclass
class RunningServer:
    url: str
    app: Any
    server: uvicorn.Server
    thread: threading.Thread
    tts: dict[str, Any]

    @property
    def ws_base(self) -> str:
        return "ws://" + self.url.split("://", 1)[1]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_server(app: Any, *, tts: dict[str, Any] | None = None, prefix: str = "") -> RunningServer:
    """Serve ``app`` on a free loopback port in a background thread; returns once it listens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, ws="websockets", log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    return RunningServer(f"http://127.0.0.1:{port}{prefix}", app, server, thread, tts or {})


def write_fake_avatar(root: Path, avatar_id: str = FAKE_AVATAR_ID) -> Path:
    """A small but real prebuilt avatar (:func:`lipcore.testing.write_test_avatar`)."""
    return write_test_avatar(root, avatar_id)


def make_tts() -> dict[str, Any]:
    return {
        "replay": ReplayTTSSource(),
        "realtime": ReplayTTSSource(realtime=True),
        "failing": FailingTTSSource(fail_after=3),
        "bulk": ReplayTTSSource(chunk_ms=2000),  # big chunks: fills socket buffers fast
    }


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Factory: ``make_server(**settings)`` starts a server with the fake TTS sources and a
    prebuilt avatar in a fresh data dir; stopped at teardown."""
    started: list[RunningServer] = []

    def factory(*, data_dir: Path | None = None, tts: dict[str, Any] | None = None,
                engine: Any = None, **kw: Any) -> RunningServer:
        data_dir = data_dir or tmp_path / "data"
        write_fake_avatar(data_dir)
        tts = tts or make_tts()
        engine = engine or testing_engine(tts=tts, default_tts="replay")
        kw.setdefault("janitor_interval_s", 0.1)
        app = create_app(engine, ServerSettings(data_dir=data_dir, **kw))
        srv = start_server(app, tts=tts)
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        srv.stop()


@pytest.fixture
def server(make_server: Callable[..., RunningServer]) -> RunningServer:
    return make_server()


# --------------------------------------------------------------------------- WS client helper


@dataclass
class Received:
    """Everything one client received, in order: ("json", dict) or ("audio", header, payload)."""

    items: list[tuple[Any, ...]] = field(default_factory=list)

    def json(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [i[1] for i in self.items if i[0] == "json" and (kind is None or
                                                                  i[1]["type"] == kind)]

    def audio(self, utterance: int | None = None) -> list[tuple[Any, bytes]]:
        return [(i[1], i[2]) for i in self.items
                if i[0] == "audio" and (utterance is None or i[1].utterance == utterance)]


async def recv_one(ws: Any, received: Received, timeout: float = 10.0) -> tuple[Any, ...]:
    msg = await asyncio.wait_for(ws.recv(), timeout)
    if isinstance(msg, bytes):
        header, payload = unpack_frame(msg)
        if header.kind == AUDIO_VISEMES_KIND:  # visemes=inline: the event, then the audio
            event, payload = split_audio_visemes(payload)
            data = json.loads(event)
            validate_server_message(data)
            received.items.append(("json", data, "inline"))
        item: tuple[Any, ...] = ("audio", header, payload)
    else:
        data = json.loads(msg)
        validate_server_message(data)  # every real message must match the protocol models
        item = ("json", data)
    received.items.append(item)
    return item


async def recv_until(ws: Any, received: Received, pred: Callable[[tuple[Any, ...]], bool],
                     timeout: float = 15.0) -> tuple[Any, ...]:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"condition not met; last items: {received.items[-3:]}")
        item = await recv_one(ws, received, left)
        if pred(item):
            return item


def is_json(kind: str, **fields: Any) -> Callable[[tuple[Any, ...]], bool]:
    def pred(item: tuple[Any, ...]) -> bool:
        return item[0] == "json" and item[1]["type"] == kind and all(
            item[1].get(k) == v for k, v in fields.items())
    return pred


@pytest.fixture(scope="session")
def real_avatar_dir(tmp_path_factory: pytest.TempPathFactory, grace_hopper_path: Path,
                    face_model_path: Path) -> Path:
    """One real avatar built from grace_hopper.jpg (built once per test session)."""
    from lipcore.avatar.store import build_avatar

    root = tmp_path_factory.mktemp("real-avatar")
    out = root / "avatars" / "a_grace_hopper_real"
    build_avatar(grace_hopper_path.read_bytes(), out, backend="sprites",
                 seconds=3.0, avatar_id="a_grace_hopper_real")
    return root


def copy_avatar(src_root: Path, dst_root: Path) -> None:
    shutil.copytree(src_root / "avatars", dst_root / "avatars", dirs_exist_ok=True)
