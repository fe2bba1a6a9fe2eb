"""The plugin inside the real lipcore server: a session created with ``tts: "elevenlabs"`` on a
real uvicorn server on loopback, its TTS pointed at the vendor mock by base URL, a real
WebSocket client. Audio and visemes reach the client; a vendor failure mid-utterance becomes the
session's ``error`` event (then ``stop``), and the next utterance plays."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from lipcore_tts_elevenlabs.mock import MockElevenLabs
from websockets.asyncio.client import ClientConnection, connect

from conftest import DE, EN
from lipcore import Engine, EngineSettings
from lipcore.server import ServerSettings, create_app
from lipcore.server.protocol import unpack_frame, validate_server_message
from lipcore.testing import write_test_avatar

pytestmark = pytest.mark.anyio

AVATAR = "a_elevenlabs_test_avatar"
LONG = (
    "Es war einmal ein kleines Dorf am Rande eines großen Waldes, in dem die Menschen "
    "jeden Morgen früh aufstanden, um auf den Feldern zu arbeiten."
)


class Server:
    """``create_app`` served by uvicorn (websockets implementation) in a background thread."""

    def __init__(self, app: Any) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(app, ws="websockets", log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the lipcore server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def serve(mock: MockElevenLabs, tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``serve(**tts_settings)``: a lipcore server whose default TTS is ElevenLabs (the mock)."""
    started: list[Server] = []

    def factory(**tts: Any) -> Server:
        options = {
            "api_key": mock.api_key,
            "base_url": mock.base_url,
            "first_audio_timeout_s": 3.0,
            "chunk_timeout_s": 1.0,
            **tts,
        }
        engine = Engine(
            settings=EngineSettings(default_tts="elevenlabs", tts_options={"elevenlabs": options})
        )
        write_test_avatar(tmp_path / "data", AVATAR)
        app = create_app(engine, ServerSettings(data_dir=tmp_path / "data"))
        srv = Server(app)
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        srv.stop()


class Client:
    """A session's WebSocket client that records what it received, in order."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.items: list[tuple[str, Any, Any]] = []  # ("json", msg, None) | ("audio", hdr, pcm)

    async def recv(self, timeout: float = 10.0) -> tuple[str, Any, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        if isinstance(raw, bytes):
            header, payload = unpack_frame(raw)
            item: tuple[str, Any, Any] = ("audio", header, payload)
        else:
            msg = json.loads(raw)
            validate_server_message(msg)  # every message must match the protocol's models
            item = ("json", msg, None)
        self.items.append(item)
        return item

    async def until(self, kind: str, timeout: float = 15.0, **fields: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind} {fields}; last: {self.items[-3:]}")
            item = await self.recv(left)
            if (
                item[0] == "json"
                and item[1]["type"] == kind
                and all(item[1].get(k) == v for k, v in fields.items())
            ):
                return item[1]  # type: ignore[no-any-return]

    def json(self, kind: str, utterance: int | None = None) -> list[dict[str, Any]]:
        return [
            i[1]
            for i in self.items
            if i[0] == "json"
            and i[1]["type"] == kind
            and (utterance is None or i[1].get("utterance") == utterance)
        ]

    def audio(self, utterance: int) -> bytes:
        return b"".join(i[2] for i in self.items if i[0] == "audio" and i[1].utterance == utterance)

    def frames(self, utterance: int, *, provisional: bool = False) -> list[dict[str, Any]]:
        """The final frames of ``utterance`` (or, with ``provisional``, the guesses)."""
        return [
            f
            for m in self.json("visemes", utterance)
            if bool(m.get("provisional")) == provisional
            for f in m["frames"]
        ]


@contextlib.asynccontextmanager
async def open_session(srv: Server, voice: str) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{srv.url}/session-2d",
            json={"avatar_id": AVATAR, "voice_id": voice, "tts": "elevenlabs"},
        )
        assert r.status_code == 200, r.text
        yield http, r.json()


async def speak(http: httpx.AsyncClient, srv: Server, sid: str, text: str, **kw: Any) -> None:
    r = await http.post(f"{srv.url}/session-2d/{sid}/speak", json={"text": text, **kw})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("voice", "text", "transport"),
    [
        (DE, "Mama und Papa bauen ein Boot am Meer.", "multi"),
        (EN, "My mother baked a pie for Bob.", "multi"),
        (DE, "Mama und Papa bauen ein Boot am Meer.", "single"),
        (EN, "My mother baked a pie for Bob.", "http"),
    ],
)
async def test_session_with_elevenlabs_gets_audio_and_visemes(
    mock: MockElevenLabs, serve: Callable[..., Server], voice: str, text: str, transport: str
) -> None:
    srv = serve(transport=transport)
    async with open_session(srv, voice) as (http, s), connect(s["ws_url"]) as ws:
        client = Client(ws)
        hello = await client.until("hello")
        # the hello announces the rate the source really sends (pcm_22050 by default)
        assert hello["audio"]["sample_rate"] == 22050
        await speak(http, srv, s["session_id"], text)
        end = await client.until("utterance_end", utterance=1)
        t_second = time.perf_counter()  # the mock runs in this process: same clock
        await speak(http, srv, s["session_id"], text)
        await client.until("utterance_end", utterance=2)
    start = client.json("utterance_start", 1)[0]
    assert start["sample_rate"] == 22050 and start["text"] == text
    (rec, _again) = [r for r in mock.contexts(transport) if r.generations]
    # every sample the vendor sent reached the client, in order, on the utterance's timeline
    pcm = client.audio(1)
    vendor_ms = sum(g.duration_ms for g in rec.generations)
    assert len(pcm) / 2 / 22050 * 1000 == pytest.approx(vendor_ms, abs=1.0)
    assert end["duration_ms"] == pytest.approx(vendor_ms, abs=1.0)
    frames = client.frames(1)
    pts = [f["pts_ms"] for f in frames]
    assert len(frames) > 20 and pts == sorted(pts) and len(set(pts)) == len(pts)
    # The vendor's first chunks are shorter than the mapper's look-ahead: the first audio
    # came with a guess at its frames, and every guessed frame got its final frame.
    guessed = [f["pts_ms"] for f in client.frames(1, provisional=True)]
    assert guessed and set(guessed) <= set(pts)
    # the bilabials of the text close the mouth: MBP dominates some frame
    assert any(max(f["weights"], key=f["weights"].get, default="") == "MBP" for f in frames)
    # the second utterance started without a new handshake: multi reused the session's socket,
    # single had the next socket opened while the first utterance spoke, http kept its
    # connection alive
    if transport == "multi":
        assert mock.connections == 1
    elif transport == "single":
        first, second = (r for r in mock.contexts("single") if r.generations)
        assert first.connection != second.connection
        assert mock.handshakes[second.connection - 1] < t_second
    else:
        assert mock.connections == 0 and len(mock.http_requests) == 2
    # the vendor key never reaches the client
    assert all(mock.api_key not in json.dumps(i[1]) for i in client.items if i[0] == "json")


@pytest.mark.parametrize(
    ("fail", "kind"),
    [
        ("server_error", "elevenlabs_connection"),  # the vendor drops the socket (1011)
        ("stall", "elevenlabs_timeout"),  # the vendor stops sending mid-stream
        ("quota", "elevenlabs_quota"),  # close 1008 with the quota message
    ],
)
async def test_vendor_failure_mid_utterance_is_an_error_event_and_the_session_goes_on(
    mock: MockElevenLabs, serve: Callable[..., Server], fail: str, kind: str
) -> None:
    srv = serve()
    async with open_session(srv, DE) as (http, s), connect(s["ws_url"]) as ws:
        client = Client(ws)
        await client.until("hello")
        mock.config.fail = fail  # type: ignore[assignment]
        mock.config.fail_after_frames = 2
        t0 = time.monotonic()
        await speak(http, srv, s["session_id"], LONG)
        error = await client.until("error", utterance=1)
        stop = await client.until("stop", utterance=1)
        assert time.monotonic() - t0 < 5.0  # nothing hangs (chunk timeout 1 s)
        mock.config.fail = None
        await speak(http, srv, s["session_id"], "Jetzt geht es wieder.")
        await client.until("utterance_end", utterance=2)
    assert error["code"] == "tts_error" and kind in error["message"]
    assert "ElevenLabs" in error["message"] and mock.api_key not in error["message"]
    # the vendor's own words (an account's remaining credits) stay in the operator's log
    assert "credits" not in error["message"] and "quota of" not in error["message"]
    assert stop["reason"] == "error"
    if fail != "quota":  # quota is refused before any audio
        assert client.audio(1), "audio before the failure reached the client"
    assert not client.json("utterance_end", 1)  # a failed utterance ends with stop
    assert len(client.audio(2)) > 22050  # the next one speaks in full
    assert any(f["weights"] for f in client.frames(2))


async def test_barge_in_closes_the_vendor_context_and_the_next_turn_plays_alone(
    mock: MockElevenLabs, serve: Callable[..., Server]
) -> None:
    mock.config.stream_speed = 1.0  # real-time pacing: the first turn is still speaking
    srv = serve()
    async with open_session(srv, DE) as (http, s), connect(s["ws_url"]) as ws:
        client = Client(ws)
        await client.until("hello")
        await speak(http, srv, s["session_id"], LONG)
        while not client.audio(1):
            await client.recv()
        await speak(http, srv, s["session_id"], "Ja, bitte?", barge_in=True)
        stop = await client.until("stop", utterance=1)
        await client.until("utterance_end", utterance=2)
    assert stop["reason"] == "barge_in"
    first, second = mock.contexts("multi")
    assert first.closed_by_client and first.messages[-1] == {
        "context_id": first.context_id,
        "close_context": True,
    }
    assert second.text.strip() == "Ja, bitte?" and mock.connections == 1
    # nothing of the stopped utterance follows its stop
    i_stop = next(i for i, it in enumerate(client.items) if it[0] == "json" and it[1] is stop)
    assert all(
        (it[1].utterance if it[0] == "audio" else it[1].get("utterance")) != 1
        for it in client.items[i_stop + 1 :]
    )
    pcm2 = client.audio(2)
    assert len(pcm2) / 2 / 22050 * 1000 == pytest.approx(second.generations[0].duration_ms, abs=1)


async def test_streamed_text_deltas_over_the_session_socket(
    mock: MockElevenLabs, serve: Callable[..., Server]
) -> None:
    srv = serve()
    async with open_session(srv, EN) as (_http, s), connect(s["ws_url"]) as ws:
        client = Client(ws)
        await client.until("hello")
        for delta in ["Good mor", "ning. ", "Maybe ", "more ", "bread?"]:
            await ws.send(json.dumps({"type": "text_delta", "delta": delta}))
        # the first sentence was flushed on its own: audio before the turn ends
        while not client.audio(1):
            await client.recv()
        await ws.send('{"type": "text_end"}')
        await client.until("utterance_end", utterance=1)
    (rec,) = mock.contexts("multi")
    sent = [m for m in rec.messages if m.get("text", "").strip()]
    # whole words go out as they complete; the finished sentence is flushed at once
    first_flush = next(m for m in sent if m.get("flush"))
    assert first_flush == {"text": "morning. ", "flush": True, "context_id": rec.context_id}
    assert "".join(m["text"] for m in sent[: sent.index(first_flush)]) == "Good "
    assert rec.text.split() == ["Good", "morning.", "Maybe", "more", "bread?"]
    assert len(client.audio(1)) / 2 / 22050 * 1000 == pytest.approx(
        sum(g.duration_ms for g in rec.generations), abs=1
    )


async def test_each_session_speaks_with_its_own_voice_profile(
    mock: MockElevenLabs, serve: Callable[..., Server]
) -> None:
    # Per-avatar / per-session settings through the unchanged server: the session's voice_id
    # names a profile (vendor voice + model + voice settings + language).
    srv = serve(
        profiles={
            "anna-calm": {
                "voice_id": DE,
                "model_id": "eleven_multilingual_v2",
                "voice_settings": {"stability": 0.9, "speed": 0.9},
            },
            "rachel-de": {"voice_id": EN, "language_code": "de"},
        }
    )
    for profile in ("anna-calm", "rachel-de"):
        async with open_session(srv, profile) as (http, s), connect(s["ws_url"]) as ws:
            client = Client(ws)
            await client.until("hello")
            await speak(http, srv, s["session_id"], "Mama baut ein Boot.")
            await client.until("utterance_end", utterance=1)
            assert len(client.audio(1)) > 11025 and any(f["weights"] for f in client.frames(1))
    calm, rachel = (r for r in mock.contexts("multi") if r.generations)
    assert calm.voice_id == DE and calm.query["model_id"] == "eleven_multilingual_v2"
    init = calm.messages[0]
    assert init["voice_settings"]["stability"] == 0.9 and init["voice_settings"]["speed"] == 0.9
    assert "language_code" not in calm.query
    assert rachel.voice_id == EN and rachel.query["language_code"] == "de"
    assert rachel.query["model_id"] == "eleven_flash_v2_5"
    assert "voice_settings" not in rachel.messages[0]


async def test_each_session_has_its_own_vendor_socket_closed_with_the_session(
    mock: MockElevenLabs, serve: Callable[..., Server]
) -> None:
    srv = serve(transport="multi")
    async with (
        open_session(srv, DE) as (http, a),
        open_session(srv, DE) as (_, b),
        connect(a["ws_url"]) as wa,
        connect(b["ws_url"]) as wb,
    ):
        ca, cb = Client(wa), Client(wb)
        await ca.until("hello")
        await cb.until("hello")
        await speak(http, srv, a["session_id"], "Mama baut ein Boot.")
        await speak(http, srv, b["session_id"], "Papa malt ein Bild.")
        await ca.until("utterance_end", utterance=1)
        await cb.until("utterance_end", utterance=1)
        used = {r.connection for r in mock.contexts("multi") if r.generations}
        assert len(used) == 2 and mock.connections == 2  # one socket per session, not a pool
        r = await http.delete(f"{srv.url}/session-2d/{a['session_id']}")
        assert r.status_code in (200, 204), r.text
        # the other session keeps its socket: its next utterance needs no new handshake
        await speak(http, srv, b["session_id"], "Noch ein Satz.")
        await cb.until("utterance_end", utterance=2)
        assert mock.connections == 2
        # a new session after the close gets a fresh socket of its own
        async with open_session(srv, DE) as (_, c), connect(c["ws_url"]) as wc:
            cc = Client(wc)
            await cc.until("hello")
            await speak(http, srv, c["session_id"], "Mama malt.")
            await cc.until("utterance_end", utterance=1)
        assert mock.connections == 3


async def test_a_key_without_voices_read_speaks_with_a_vendor_voice_id(
    mock: MockElevenLabs, serve: Callable[..., Server]
) -> None:
    """A key limited to speech: GET /v1/voices answers 401 missing_permissions, as the vendor
    does. A session with an explicit voice id (or a profile) still speaks; a name cannot be
    looked up and the error says what to do."""
    mock.config.voices_read = False
    srv = serve(profiles={"anna-calm": {"voice_id": DE}})
    for voice in (EN, "anna-calm"):
        async with open_session(srv, voice) as (http, s), connect(s["ws_url"]) as ws:
            client = Client(ws)
            await client.until("hello")
            await speak(http, srv, s["session_id"], "Mama baut ein Boot.")
            await client.until("utterance_end", utterance=1)
            assert len(client.audio(1)) > 11025
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(f"{srv.url}/session-2d",
                            json={"avatar_id": AVATAR, "voice_id": "Rachel (mock)",
                                  "tts": "elevenlabs"})
        assert r.status_code == 404, r.text
        assert "voices_read" in r.json()["detail"] and "voice id" in r.json()["detail"]
        # Listing stays its own call, and says why it fails.
        r = await http.get(f"{srv.url}/voices", params={"tts": "elevenlabs"})
        # The vendor's own words stay in the operator's log; the client gets the kind.
        detail = r.json()["detail"]
        assert r.status_code == 502 and "elevenlabs_permission" in detail, detail
        assert "listing voices" in detail and "credits" not in detail


async def test_a_voice_given_by_name_speaks_with_that_voice(
    mock: MockElevenLabs, serve: Callable[..., Server]
) -> None:
    srv = serve()
    async with open_session(srv, "rachel (mock)") as (http, s), connect(s["ws_url"]) as ws:
        client = Client(ws)
        await client.until("hello")
        await speak(http, srv, s["session_id"], "Good morning.")
        await client.until("utterance_end", utterance=1)
        assert len(client.audio(1)) > 11025
    assert [r.voice_id for r in mock.contexts() if r.generations] == [EN]
