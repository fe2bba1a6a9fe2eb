"""A protocol-faithful local mock of the ElevenLabs TTS API, speaking with REAL speech.

It serves, on ``127.0.0.1``, the endpoints this plugin uses, as the vendor documents them
(see ``docs`` in the plugin README): the WebSockets ``stream-input`` and ``multi-stream-input``
(init frame, chunk-length schedule, ``flush``, keep-alives, ``close_context``, ``close_socket``,
``isFinal`` then close 1000, idle close 1008 with an error frame, the 5-context limit), the
HTTP ``stream/with-timestamps`` (NDJSON, float seconds, continuous) and ``GET /v1/voices``.

Its audio is lipcore's espeak-ng speech, so the true phoneme times are known: character timings
are built from them (each word's characters share the word's span), and every context keeps the
ground truth (:class:`ContextRecord`) so tests and benchmarks can measure timing accuracy.

Knobs (:class:`MockConfig`, changeable while it runs): first-audio delay, frame length and
pacing, null alignments, the spec's ``charsDurationsMs`` spelling, error closes (quota, a stall
mid-stream, a server error close), forced HTTP statuses, a refused handshake.

    with MockElevenLabs() as mock:               # a real server in a background thread
        source = ElevenLabsTTSSource(api_key=mock.api_key, base_url=mock.base_url)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from lipcore.interfaces import CharTiming, PhonemeTiming

__all__ = [
    "ContextRecord",
    "Generation",
    "MockConfig",
    "MockElevenLabs",
    "MockVoice",
    "char_timings_from_phonemes",
]

logger = logging.getLogger("lipcore_tts_elevenlabs.mock")

_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class MockVoice:
    voice_id: str
    name: str
    language: str
    espeak_voice: str
    gender: str = "female"


DEFAULT_VOICES = (
    MockVoice("mock-de-anna", "Anna (mock)", "de", "de", "female"),
    MockVoice("mock-en-rachel", "Rachel (mock)", "en", "en-us", "female"),
)

FailMode = Literal["quota", "stall", "server_error", "bad_json"]


@dataclass
class MockConfig:
    """Behaviour of the mock; attributes may be changed while it runs."""

    api_key: str = "mock-api-key-0123456789"
    first_audio_delay_ms: float = 150.0
    chunk_ms: float = 200.0  # audio per frame
    stream_speed: float = 8.0  # frames go out this many times faster than real time
    null_alignment_frames: frozenset[int] = frozenset()  # frame numbers (per context): both null
    null_normalized_frames: frozenset[int] = frozenset()  # only normalizedAlignment null
    durations_key: str = "charDurationsMs"  # or the spec's "charsDurationsMs"
    leading_space: bool = True  # normalizedAlignment starts each generation with a space
    max_contexts: int = 5
    fail: FailMode | None = None
    fail_after_frames: int = 1
    http_status: int | None = None  # force this status on the HTTP stream endpoint
    idle_timeout_cap_s: float | None = None  # shorter idle close than the client asked for
    reject_handshake_status: int | None = None  # refuse the WebSocket upgrade with this status
    voices: tuple[MockVoice, ...] = DEFAULT_VOICES
    #: False: the key is limited to speech; GET /v1/voices answers as the vendor does then
    #: (401 missing_permissions, voices_read)
    voices_read: bool = True


@dataclass
class Generation:
    """One generation (a flushed or scheduled piece of text) with its ground truth."""

    text: str
    start_ms: float  # where its audio starts on the context's timeline
    duration_ms: float
    phonemes: list[PhonemeTiming]  # true (espeak) times, absolute on the context timeline
    chars: list[CharTiming]  # true character times (text as sent), absolute
    t_trigger: float = 0.0  # perf_counter when generation was triggered
    t_first_frame: float | None = None  # perf_counter when its first frame was sent


@dataclass
class ContextRecord:
    """What happened on one context (or one stream-input socket, or one HTTP request)."""

    kind: Literal["multi", "single", "http"]
    connection: int
    context_id: str | None
    voice_id: str
    query: dict[str, str]
    messages: list[dict[str, Any]] = field(default_factory=list)
    generations: list[Generation] = field(default_factory=list)
    sent_chars: list[CharTiming] = field(default_factory=list)  # as sent (after rounding)
    frames_sent: int = 0
    frames_after_close: int = 0
    closed_by_client: bool = False
    final_sent: bool = False

    @property
    def text(self) -> str:
        return "".join(g.text for g in self.generations)

    @property
    def true_phonemes(self) -> list[PhonemeTiming]:
        return [p for g in self.generations for p in g.phonemes]

    @property
    def true_chars(self) -> list[CharTiming]:
        return [c for g in self.generations for c in g.chars]


@dataclass
class _Speech:
    pcm: np.ndarray  # int16 at the espeak rate
    rate: int
    phonemes: list[PhonemeTiming]
    chars: list[CharTiming]


def char_timings_from_phonemes(
    text: str, phonemes: Sequence[PhonemeTiming], *, end_ms: float
) -> list[CharTiming]:
    """Character timings for ``text`` from espeak's timed phonemes.

    Word *n* of the text (whitespace-separated tokens that contain a letter or digit) takes the
    span of the phonemes espeak numbered with word *n*; its letters share the span evenly, its
    trailing punctuation and the following space share the gap to the next word.
    """
    tokens = [m for m in _WORD.finditer(text) if any(ch.isalnum() for ch in m.group())]
    spans: dict[int, list[float]] = {}
    for ph in phonemes:
        w = max(ph.word, 0)
        span = spans.setdefault(w, [ph.start_ms, ph.end_ms])
        span[0] = min(span[0], ph.start_ms)
        span[1] = max(span[1], ph.end_ms)
    order = sorted(spans)
    word_spans: list[tuple[float, float]] = []
    if len(order) == len(tokens):
        word_spans = [(spans[w][0], spans[w][1]) for w in order]
    elif tokens and order:
        # espeak counted words differently (numbers, abbreviations): spread the spoken span
        # over the tokens by their length.
        lo, hi = spans[order[0]][0], spans[order[-1]][1]
        lengths = np.array([len(t.group()) for t in tokens], dtype=float)
        edges = lo + (hi - lo) * np.concatenate(([0.0], np.cumsum(lengths) / lengths.sum()))
        word_spans = [(float(edges[i]), float(edges[i + 1])) for i in range(len(tokens))]
    out: list[CharTiming | None] = [None] * len(text)
    for i, tok in enumerate(tokens):
        ws, we = word_spans[i] if i < len(word_spans) else (end_ms, end_ms)
        core = [j for j in range(tok.start(), tok.end()) if text[j].isalnum() or text[j] in "'’-"]
        n = max(1, len(core))
        for k, j in enumerate(core):
            out[j] = CharTiming(text[j], ws + (we - ws) * k / n, ws + (we - ws) * (k + 1) / n)
    # Everything else (spaces, punctuation) fills the gap between the neighbouring words.
    last_end = 0.0
    j = 0
    while j < len(text):
        if out[j] is not None:
            last_end = out[j].end_ms  # type: ignore[union-attr]
            j += 1
            continue
        k = j
        while k < len(text) and out[k] is None:
            k += 1
        nxt = out[k].start_ms if k < len(text) else max(end_ms, last_end)  # type: ignore[union-attr]
        gap = max(0.0, nxt - last_end)
        for m in range(j, k):
            frac0, frac1 = (m - j) / (k - j), (m - j + 1) / (k - j)
            out[m] = CharTiming(text[m], last_end + gap * frac0, last_end + gap * frac1)
        j = k
    return [c for c in out if c is not None]


class _SpeechBank:
    """Real speech from lipcore's espeak source, cached per (text, voice)."""

    def __init__(self) -> None:
        from lipcore.default_plugins.espeak import EspeakSource

        self.source = EspeakSource()
        self.cache: dict[tuple[str, str], _Speech] = {}

    async def speak(self, text: str, espeak_voice: str) -> _Speech:
        key = (text, espeak_voice)
        if key in self.cache:
            return self.cache[key]
        audio = bytearray()
        phonemes: list[PhonemeTiming] = []
        rate = 22050
        async for chunk in self.source.synthesize(text, voice=espeak_voice):
            audio += chunk.audio
            phonemes.extend(chunk.phonemes)
            rate = chunk.sample_rate
        pcm = np.frombuffer(bytes(audio), dtype="<i2").copy()
        end_ms = len(pcm) * 1000.0 / rate
        speech = _Speech(
            pcm, rate, phonemes, char_timings_from_phonemes(text, phonemes, end_ms=end_ms)
        )
        self.cache[key] = speech
        return speech


def _resample(pcm: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return pcm
    import soxr

    out = np.asarray(soxr.resample(pcm.astype(np.float32) / 32768.0, src, dst))
    result: np.ndarray = np.clip(np.round(out * 32768.0), -32768, 32767).astype("<i2")
    return result


def _close_reason(text: str) -> str:
    raw = text.encode("utf-8")[:120]  # a close reason may carry at most 123 bytes
    return raw.decode("utf-8", "ignore")


class _Ctx:
    """Server-side state of one context."""

    def __init__(
        self, record: ContextRecord, rate: int, schedule: list[int], implicit: bool
    ) -> None:
        self.record = record
        self.rate = rate
        self.schedule = schedule
        self.schedule_idx = 0
        self.buffer = ""
        self.implicit = implicit
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.samples = 0  # audio samples generated on this context
        self.frame_no = 0
        self.closed = False
        self.generating = False
        self.task: asyncio.Task[None] | None = None


class MockElevenLabs:
    """The mock server. Use as a (sync or async) context manager, or ``start()``/``stop()``."""

    def __init__(self, config: MockConfig | None = None, **overrides: Any) -> None:
        self.config = config or MockConfig()
        for key, value in overrides.items():
            setattr(self.config, key, value)
        self.records: list[ContextRecord] = []
        self.connections = 0  # WebSocket connections accepted
        self.handshakes: list[float] = []  # perf_counter of each accepted WebSocket
        self.http_requests: list[dict[str, Any]] = []
        self.port = 0
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bank: _SpeechBank | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    # -- public --------------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        return self.config.api_key

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def contexts(self, kind: str | None = None) -> list[ContextRecord]:
        return [r for r in self.records if kind is None or r.kind == kind]

    def warm(self, text: str, voice_id: str | None = None) -> None:
        """Synthesize ``text`` ahead, so a later request does not wait for espeak."""
        voice = self._voice(voice_id or self.config.voices[0].voice_id)
        assert voice is not None and self._loop is not None
        asyncio.run_coroutine_threadsafe(
            self._speech_bank().speak(text.strip(), voice.espeak_voice), self._loop
        ).result(30)

    def start(self) -> MockElevenLabs:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(),
            log_level="warning",
            lifespan="off",
            ws="websockets-sansio",
            timeout_graceful_shutdown=1,
            ws_ping_interval=None,
        )
        self._server = uvicorn.Server(config)

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve(sock))
            except BaseException as exc:
                self._error = exc
                self._started.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="mock-elevenlabs", daemon=True)
        self._thread.start()
        if not self._started.wait(15) or self._error is not None:
            raise RuntimeError(f"the ElevenLabs mock did not start: {self._error!r}")
        return self

    async def _serve(self, sock: socket.socket) -> None:
        task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[sock]))
        while not self._server.started and not task.done():
            await asyncio.sleep(0.01)
        self._started.set()
        await task

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._thread = None

    def __enter__(self) -> MockElevenLabs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> MockElevenLabs:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # -- helpers -------------------------------------------------------------------------

    def _speech_bank(self) -> _SpeechBank:
        if self._bank is None:
            self._bank = _SpeechBank()
        return self._bank

    def _voice(self, voice_id: str) -> MockVoice | None:
        return next((v for v in self.config.voices if v.voice_id == voice_id), None)

    def _espeak_voice(self, voice: MockVoice, language_code: str | None) -> str:
        if language_code and language_code.split("-")[0] != voice.language:
            return {"en": "en-us"}.get(language_code, language_code)
        return voice.espeak_voice

    # -- app -----------------------------------------------------------------------------

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.routing import Route, WebSocketRoute

        return Starlette(
            routes=[
                Route("/v1/voices", self._voices_endpoint, methods=["GET"]),
                Route(
                    "/v1/text-to-speech/{voice_id}/stream/with-timestamps",
                    self._http_stream,
                    methods=["POST"],
                ),
                WebSocketRoute("/v1/text-to-speech/{voice_id}/stream-input", self._ws_single),
                WebSocketRoute("/v1/text-to-speech/{voice_id}/multi-stream-input", self._ws_multi),
            ]
        )

    def _auth_ok(self, headers: Any, query: Any) -> bool:
        key = headers.get("xi-api-key") or query.get("authorization")
        return bool(key == self.config.api_key)

    async def _voices_endpoint(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if not self._auth_ok(request.headers, request.query_params):
            return JSONResponse(
                {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}, 401
            )
        if not self.config.voices_read:
            return JSONResponse(
                {
                    "detail": {
                        "status": "missing_permissions",
                        "message": "The API key you used is missing the permission voices_read "
                        "to execute this operation.",
                    }
                },
                401,
            )
        return JSONResponse(
            {
                "voices": [
                    {
                        "voice_id": v.voice_id,
                        "name": v.name,
                        "category": "premade",
                        "labels": {"language": v.language, "gender": v.gender, "accent": "mock"},
                        "verified_languages": [
                            {"language": v.language, "model_id": "eleven_flash_v2_5"}
                        ],
                    }
                    for v in self.config.voices
                ]
            }
        )

    # -- HTTP stream ---------------------------------------------------------------------

    async def _http_stream(self, request: Any) -> Any:
        from starlette.responses import JSONResponse, StreamingResponse

        cfg = self.config
        voice_id = request.path_params["voice_id"]
        query = dict(request.query_params)
        self.http_requests.append({"voice_id": voice_id, "query": query})
        if not self._auth_ok(request.headers, request.query_params):
            return JSONResponse(
                {"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}, 401
            )
        if cfg.http_status == 429:
            return JSONResponse(
                {
                    "detail": {
                        "status": "too_many_concurrent_requests",
                        "message": "Too many concurrent requests for your plan.",
                    }
                },
                429,
            )
        if cfg.http_status == 422:
            return JSONResponse(
                {
                    "detail": [
                        {
                            "loc": ["body", "text"],
                            "msg": "field required",
                            "type": "value_error.missing",
                        }
                    ]
                },
                422,
            )
        if cfg.http_status is not None:
            return JSONResponse(
                {"detail": {"status": "error", "message": "mock error"}}, cfg.http_status
            )
        if cfg.fail == "quota":
            return JSONResponse(
                {
                    "detail": {
                        "status": "quota_exceeded",
                        "message": "This request exceeds your quota of 10000. You have 0 "
                        "credits remaining, while 42 credits are required for this request.",
                    }
                },
                401,
            )
        voice = self._voice(voice_id)
        if voice is None:
            return JSONResponse(
                {
                    "detail": {
                        "status": "voice_not_found",
                        "message": f"A voice with the voice_id {voice_id} was not found.",
                    }
                },
                404,
            )
        try:
            body = json.loads(await request.body())
            text = str(body["text"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse(
                {
                    "detail": [
                        {
                            "loc": ["body", "text"],
                            "msg": "field required",
                            "type": "value_error.missing",
                        }
                    ]
                },
                422,
            )
        rate = int(query.get("output_format", "mp3_44100_128").split("_")[1])
        record = ContextRecord("http", 0, None, voice_id, query, messages=[body])
        self.records.append(record)
        t_trigger = time.perf_counter()
        speech = await self._speech_bank().speak(
            text.strip(), self._espeak_voice(voice, body.get("language_code"))
        )

        async def lines() -> AsyncIterator[bytes]:
            frames = self._frames(record, speech, rate, text.strip(), t_trigger)
            for n, (pcm, chars, _start_ms) in enumerate(frames):
                await self._pace(record, n, t_trigger, rate)
                if cfg.fail == "stall" and n >= cfg.fail_after_frames:
                    await asyncio.sleep(3600)
                if cfg.fail == "server_error" and n >= cfg.fail_after_frames:
                    raise RuntimeError("mock: connection dropped mid-stream")
                starts = [round(c.start_ms / 1000.0, 3) for c in chars]
                ends = [round(c.end_ms / 1000.0, 3) for c in chars]
                align = {
                    "characters": [c.char for c in chars],
                    "character_start_times_seconds": starts,
                    "character_end_times_seconds": ends,
                }
                record.sent_chars.extend(
                    CharTiming(c.char, s * 1000.0, e * 1000.0)
                    for c, s, e in zip(chars, starts, ends, strict=True)
                )
                line = {
                    "audio_base64": base64.b64encode(pcm).decode(),
                    "alignment": None if n in cfg.null_alignment_frames else align,
                    "normalized_alignment": None
                    if n in cfg.null_alignment_frames or n in cfg.null_normalized_frames
                    else align,
                }
                record.frames_sent += 1
                yield (json.dumps(line) + "\n").encode()
            record.final_sent = True

        return StreamingResponse(lines(), media_type="application/json")

    # -- frames --------------------------------------------------------------------------

    def _frames(
        self,
        record: ContextRecord,
        speech: _Speech,
        rate: int,
        text: str,
        t_trigger: float,
        start_samples: int = 0,
    ) -> list[tuple[bytes, list[CharTiming], float]]:
        """Cut one generation into frames: (pcm, absolute chars of the frame, frame start)."""
        pcm = _resample(speech.pcm, speech.rate, rate)
        base_ms = start_samples * 1000.0 / rate
        duration_ms = len(pcm) * 1000.0 / rate
        shift = [
            PhonemeTiming(p.phoneme, p.start_ms + base_ms, p.end_ms + base_ms, p.word)
            for p in speech.phonemes
        ]
        chars = [CharTiming(c.char, c.start_ms + base_ms, c.end_ms + base_ms) for c in speech.chars]
        record.generations.append(
            Generation(text, base_ms, duration_ms, shift, chars, t_trigger=t_trigger)
        )
        per = max(1, round(self.config.chunk_ms * rate / 1000.0))
        frames: list[tuple[bytes, list[CharTiming], float]] = []
        starts = list(range(0, len(pcm), per)) or [0]
        for i, s0 in enumerate(starts):
            f_start = base_ms + s0 * 1000.0 / rate
            f_end = base_ms + min(len(pcm), s0 + per) * 1000.0 / rate
            last = i == len(starts) - 1
            mine = [
                c for c in chars if f_start <= c.start_ms < f_end or (last and c.start_ms >= f_end)
            ]
            frames.append((pcm[s0 : s0 + per].tobytes(), mine, f_start))
        return frames

    async def _pace(self, record: ContextRecord, n: int, t_trigger: float, rate: int) -> None:
        cfg = self.config
        due = t_trigger + cfg.first_audio_delay_ms / 1000.0
        if cfg.stream_speed > 0:
            due += n * cfg.chunk_ms / 1000.0 / cfg.stream_speed
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        gen = record.generations[-1]
        if gen.t_first_frame is None:
            gen.t_first_frame = time.perf_counter()

    def _ws_frame(
        self, ctx: _Ctx, pcm: bytes, chars: list[CharTiming], f_start: float, first_of_gen: bool
    ) -> dict[str, Any]:
        cfg = self.config
        rel = [
            (c.char, round(c.start_ms - f_start), max(0, round(c.end_ms - c.start_ms)))
            for c in chars
        ]
        ctx.record.sent_chars.extend(
            CharTiming(ch, f_start + s, f_start + s + d) for ch, s, d in rel
        )
        original: dict[str, list[Any]] = {
            "chars": [r[0] for r in rel],
            "charStartTimesMs": [r[1] for r in rel],
            cfg.durations_key: [r[2] for r in rel],
        }
        normalized = {k: list(v) for k, v in original.items()}
        if cfg.leading_space and first_of_gen:
            lead = rel[0][1] if rel else 0
            normalized["chars"].insert(0, " ")
            normalized["charStartTimesMs"].insert(0, 0)
            normalized[cfg.durations_key].insert(0, lead)
        n = ctx.frame_no
        frame: dict[str, Any] = {
            "audio": base64.b64encode(pcm).decode(),
            "isFinal": None,
            "normalizedAlignment": None
            if n in cfg.null_alignment_frames or n in cfg.null_normalized_frames
            else normalized,
            "alignment": None if n in cfg.null_alignment_frames else original,
        }
        return frame

    # -- WebSockets ----------------------------------------------------------------------

    async def _ws_single(self, ws: Any) -> None:
        await self._ws_session(ws, multi=False)

    async def _ws_multi(self, ws: Any) -> None:
        await self._ws_session(ws, multi=True)

    async def _ws_session(self, ws: Any, *, multi: bool) -> None:
        await _MockSocket(self, ws, multi=multi).serve()


class _MockSocket:
    """One vendor WebSocket connection of the mock (``stream-input`` or, with ``multi``,
    ``multi-stream-input``): the handshake checks, the contexts and their generation workers,
    and the message loop with the vendor's close codes."""

    def __init__(self, mock: MockElevenLabs, ws: Any, *, multi: bool) -> None:
        self.mock = mock
        self.ws = ws
        self.multi = multi
        self.cfg = mock.config
        self.voice_id: str = ws.path_params["voice_id"]
        self.query: dict[str, str] = dict(ws.query_params)
        self.send_lock = asyncio.Lock()
        self.contexts: dict[str | None, _Ctx] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = asyncio.Event()
        self.closed = False
        self.header_key: str | None = ws.headers.get("xi-api-key") or self.query.get(
            "authorization"
        )
        self.authed = self.header_key == self.cfg.api_key
        self.conn = 0
        self.rate = 0
        self.idle_s = 0.0
        self.espeak_voice = ""

    async def serve(self) -> None:
        from starlette.websockets import WebSocketDisconnect

        if not await self._handshake():
            return
        try:
            await self._receive_loop()
            if self.closing.is_set():
                await asyncio.gather(*self.tasks, return_exceptions=True)
                await self.close(1000, "")
            elif not self.closed and self.tasks:
                # single: the worker closes after the final frame
                await asyncio.gather(*self.tasks, return_exceptions=True)
        except WebSocketDisconnect:
            pass
        except RuntimeError:
            pass  # sent on a socket the client already closed
        finally:
            self.closed = True
            for task in self.tasks:
                task.cancel()

    async def _handshake(self) -> bool:
        cfg, ws, query = self.cfg, self.ws, self.query
        if cfg.reject_handshake_status == 403:
            await ws.close(code=1008)  # before accept → the upgrade is refused (HTTP 403)
            return False
        if cfg.reject_handshake_status is not None:
            # Another status, as a proxy without WebSocket support would answer the upgrade.
            from starlette.responses import JSONResponse

            status = cfg.reject_handshake_status
            await ws.send_denial_response(
                JSONResponse({"detail": {"status": "error", "message": "no upgrade"}}, status)
            )
            return False
        await ws.accept()
        self.mock.connections += 1
        self.conn = self.mock.connections
        self.mock.handshakes.append(time.perf_counter())
        self.rate = int(query.get("output_format", "mp3_44100").split("_")[1])
        self.idle_s = float(query.get("inactivity_timeout", "20"))
        if cfg.idle_timeout_cap_s is not None:
            self.idle_s = min(self.idle_s, cfg.idle_timeout_cap_s)
        if self.header_key is not None and not self.authed:
            await self._refuse("Invalid API key", "invalid_api_key")
            return False
        voice = self.mock._voice(self.voice_id)
        if voice is None:
            await self._refuse(
                f"A voice with the voice_id {self.voice_id} was not found.", "voice_not_found"
            )
            return False
        self.espeak_voice = self.mock._espeak_voice(voice, query.get("language_code"))
        return True

    # -- sending ------------------------------------------------------------------------

    async def send(self, obj: dict[str, Any]) -> None:
        if self.closed:
            return
        async with self.send_lock:
            await self.ws.send_text(json.dumps(obj))

    async def close(self, code: int, reason: str, error: dict[str, Any] | None = None) -> None:
        if self.closed:
            return
        if error is not None:
            with contextlib.suppress(Exception):
                await self.send(error)
        self.closed = True
        with contextlib.suppress(Exception):
            await self.ws.close(code=code, reason=_close_reason(reason))

    async def _refuse(self, message: str, error: str) -> None:
        """Close with 1008 and the vendor's error message."""
        await self.close(1008, message, {"message": message, "error": error, "code": 1008})

    # -- generation ---------------------------------------------------------------------

    async def _worker(self, ctx: _Ctx) -> None:
        try:
            while True:
                text = await ctx.queue.get()
                if text is None:
                    break
                ctx.generating = True
                try:
                    await self._generate(ctx, text)
                finally:
                    ctx.generating = False
            if not self.closed:
                final: dict[str, Any] = {"isFinal": True}
                if self.multi:
                    final["contextId"] = ctx.record.context_id
                await self.send(final)
                ctx.record.final_sent = True
            if not self.multi:
                await self.close(1000, "")
        except Exception:
            logger.debug("mock worker ended", exc_info=True)

    async def _generate(self, ctx: _Ctx, text: str) -> None:
        cfg, mock = self.cfg, self.mock
        t_trigger = time.perf_counter()
        speech = await mock._speech_bank().speak(text.strip(), self.espeak_voice)
        frames = mock._frames(ctx.record, speech, self.rate, text, t_trigger, ctx.samples)
        for n, (pcm, chars, f_start) in enumerate(frames):
            if self.closed:
                return
            # The frame is encoded ahead, so it leaves exactly when it is due (the
            # configured first-audio delay is the vendor's, not ours plus encoding).
            mark = len(ctx.record.sent_chars)
            frame = mock._ws_frame(ctx, pcm, chars, f_start, n == 0)
            if self.multi:
                frame["contextId"] = ctx.record.context_id
            payload = json.dumps(frame)
            await mock._pace(ctx.record, n, t_trigger, self.rate)
            failing = cfg.fail is not None and ctx.frame_no >= cfg.fail_after_frames
            if failing and cfg.fail in ("stall", "server_error"):
                del ctx.record.sent_chars[mark:]  # this frame never goes out
            if failing and cfg.fail == "stall":
                await asyncio.sleep(3600)
            if failing and cfg.fail == "server_error":
                await self.close(1011, "Internal server error")
                return
            if failing and cfg.fail == "bad_json":
                async with self.send_lock:
                    await self.ws.send_text("{not json")
            if ctx.closed:
                ctx.record.frames_after_close += 1
            if self.closed:
                return
            async with self.send_lock:
                await self.ws.send_text(payload)
            ctx.record.frames_sent += 1
            ctx.frame_no += 1
            ctx.samples += len(pcm) // 2

    @staticmethod
    def _take(ctx: _Ctx, *, everything: bool) -> None:
        """Move buffered text to the context's generation queue (all of it, or up to the
        last complete word)."""
        buf = ctx.buffer
        if not buf.strip():
            ctx.buffer = ""
            return
        if everything:
            piece, ctx.buffer = buf, ""
        else:
            cut = buf.rstrip().rfind(" ")
            if cut <= 0:
                return
            piece, ctx.buffer = buf[: cut + 1], buf[cut + 1 :]
        ctx.queue.put_nowait(piece)

    def _new_ctx(self, cid: str | None, msg: dict[str, Any], implicit: bool) -> _Ctx:
        gen_cfg = msg.get("generation_config") or {}
        schedule = list(gen_cfg.get("chunk_length_schedule") or [120, 160, 250, 290])
        record = ContextRecord(
            "multi" if self.multi else "single", self.conn, cid, self.voice_id, self.query
        )
        self.mock.records.append(record)
        ctx = _Ctx(record, self.rate, schedule, implicit)
        ctx.task = asyncio.get_running_loop().create_task(self._worker(ctx))
        self.tasks.add(ctx.task)
        self.contexts[cid] = ctx
        return ctx

    def _active(self) -> int:
        return sum(1 for c in self.contexts.values() if not (c.task and c.task.done()))

    # -- receiving ----------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        first = True
        while not self.closed:
            try:
                raw = await asyncio.wait_for(self.ws.receive_text(), self.idle_s)
            except TimeoutError:
                if any(c.generating for c in self.contexts.values()):
                    continue  # the idle clock counts silence of the client, not of us
                await self._refuse(
                    f"Have not received a new text input within the timeout of "
                    f"{self.idle_s:g} seconds. Send text or an empty string to close.",
                    "input_timeout_exceeded",
                )
                return
            try:
                msg = json.loads(raw)
            except ValueError:
                await self._refuse("Invalid JSON", "invalid_request")
                return
            if not await self._handle(msg, first):
                return
            first = False

    async def _handle(self, msg: dict[str, Any], first: bool) -> bool:
        """One client message; False once the connection is done."""
        cfg, multi, contexts = self.cfg, self.multi, self.contexts
        text: Any
        cid = msg.get("context_id") if multi else None
        if first or (multi and cid not in contexts):
            key = msg.get("xi-api-key") or msg.get("xi_api_key")
            if key is not None:
                self.authed = key == cfg.api_key
            if not self.authed:
                await self._refuse("Invalid API key", "invalid_api_key")
                return False
        if msg.get("close_socket"):
            for ctx in contexts.values():
                self._take(ctx, everything=True)
                ctx.queue.put_nowait(None)
            self.closing.set()
            return False
        if multi and cid not in contexts:
            if self._active() >= cfg.max_contexts:
                await self._refuse(
                    f"Maximum simultaneous contexts per WebSocket connection exceeded "
                    f"({cfg.max_contexts}). Close unused contexts.",
                    "max_active_conversations",
                )
                return False
            implicit = msg.get("text") != " " or "flush" in msg
            self._new_ctx(cid, msg, implicit)
            if not implicit:
                contexts[cid].record.messages.append(msg)
                return True
        elif not multi and first:
            if msg.get("text") != " ":
                await self._refuse(
                    "The first message must be an initialisation message with text ' '.",
                    "invalid_request",
                )
                return False
            self._new_ctx(None, msg, False)
            contexts[None].record.messages.append(msg)
            return True
        ctx = contexts[cid]
        ctx.record.messages.append(msg)
        if multi and ctx.implicit and "voice_settings" in msg:
            await self._refuse(
                f"Context {cid} received voice_settings after it was initialised.",
                "invalid_request",
            )
            return False
        if msg.get("close_context"):
            ctx.closed = True
            ctx.record.closed_by_client = True
            # The spec: unflushed text is dropped, text already flushed keeps generating
            # (those are the late frames a client must drop), then isFinal.
            ctx.buffer = ""
            ctx.queue.put_nowait(None)
            return True
        text = msg.get("text")
        if ctx.closed:
            return True
        if not multi and text == "":
            self._take(ctx, everything=True)
            ctx.queue.put_nowait(None)  # end of input
            return True
        if isinstance(text, str) and text not in ("", " "):
            ctx.buffer += text
        if (
            msg.get("flush")
            or (msg.get("try_trigger_generation") and len(ctx.buffer) >= 50)
            or self.query.get("auto_mode") == "true"
        ):
            self._take(ctx, everything=True)
        elif len(ctx.buffer) >= ctx.schedule[min(ctx.schedule_idx, len(ctx.schedule) - 1)]:
            ctx.schedule_idx += 1
            self._take(ctx, everything=False)
        if cfg.fail == "quota" and isinstance(text, str) and text.strip():
            await self._refuse(
                "This request exceeds your quota of 10000. You have 0 credits remaining, "
                "while 42 credits are required for this request.",
                "quota_exceeded",
            )
            return False
        return True
