"""The ElevenLabs TTS source: streaming speech with character timings.

Three transports (setting ``transport``):

``multi`` (default)
    ``multi-stream-input``: one socket per session (``options["session_id"]``; one shared pool
    without it), a context per utterance. A new utterance reuses the open socket, so it pays no
    new TLS handshake. Barge-in (the ``synthesize`` generator closed or its task cancelled)
    sends ``close_context`` and drops the context's late frames; a closed context holds its slot
    until its final frame arrives, so the vendor's 5-context limit is never exceeded.
``single``
    ``stream-input``: one socket per utterance (the vendor closes it after the final frame). The
    next socket is opened and initialised in the background while the current one speaks, so it
    too starts without a handshake. Barge-in closes the socket (there is no cancel message).
``http``
    ``stream/with-timestamps`` (NDJSON). Streamed text is sent a sentence per request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import json
import logging
import random
import re
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import httpx

from lipcore.errors import UnknownVoiceError
from lipcore.interfaces import CharTiming, TTSCapabilities, TTSChunk, TTSSource, Voice
from lipcore_tts_elevenlabs._errors_map import from_close, from_exception, from_http, make_error
from lipcore_tts_elevenlabs._ws import Closed, Context, VendorSocket
from lipcore_tts_elevenlabs.alignment import CharTimeline
from lipcore_tts_elevenlabs.errors import (
    ElevenLabsConnectionError,
    ElevenLabsContextLimitError,
    ElevenLabsError,
    ElevenLabsPermissionError,
    ElevenLabsTimeoutError,
)
from lipcore_tts_elevenlabs.settings import ElevenLabsSettings, settings_from_kwargs, ws_base_url
from lipcore_tts_elevenlabs.text import TextFeeder, split_sentences

__all__ = ["ElevenLabsTTSSource"]

logger = logging.getLogger("lipcore_tts_elevenlabs")

_DEFAULT_SESSION = "__shared__"
#: The shape of an ElevenLabs voice id ("21m00Tcm4TlvDq8ikWAM"): usable without a listing.
_VENDOR_ID = re.compile(r"[A-Za-z0-9]{20}")


class _FeedFailed:
    """The caller's text iterator raised; the receiver re-raises it."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class ElevenLabsTTSSource(TTSSource):
    """Speech from ElevenLabs with character timings on one absolute timeline.

    Keyword settings are those of :class:`~lipcore_tts_elevenlabs.settings.ElevenLabsSettings`
    (``api_key``, ``base_url``, ``model_id``, ``output_format``, ``voice_settings``,
    ``language_code``, ``transport``, timeouts...). ``synthesize(options=...)`` overrides the
    per-utterance ones and takes ``session_id`` (the socket to share).
    """

    name: ClassVar[str] = "elevenlabs"
    capabilities: ClassVar[TTSCapabilities] = TTSCapabilities(
        timings="characters",
        streaming_input=True,
        sample_rates=(22050, 16000, 24000, 44100),
        sessions=True,
    )

    def __init__(self, **settings: Any) -> None:
        self.settings = settings_from_kwargs(settings)
        rate = self.settings.sample_rate
        if rate != type(self).capabilities.sample_rates[0]:
            # The server announces sample_rates[0] in its hello: the configured rate goes first.
            others = tuple(r for r in type(self).capabilities.sample_rates if r != rate)
            vars(self)["capabilities"] = TTSCapabilities(
                timings="characters",
                streaming_input=True,
                sample_rates=(rate, *others),
                sessions=True,
            )
        self._pools: dict[tuple[Any, ...], list[VendorSocket]] = {}
        self._loops: dict[int, asyncio.AbstractEventLoop] = {}
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None
        self._voices: tuple[float, str, list[Voice]] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)
        #: Counters a test or a dashboard can read.
        self.stats: dict[str, int] = {
            "connections_opened": 0,
            "reconnects": 0,
            "dropped_late_frames": 0,
            "utterances": 0,
            "http_fallbacks": 0,
        }
        self._ws_broken_until: dict[str, float] = {}  # base URL → monotonic time

    def __repr__(self) -> str:  # the key stays out (SecretStr would mask it anyway)
        s = self.settings
        return (
            f"ElevenLabsTTSSource(base_url={s.base_url!r}, model_id={s.model_id!r}, "
            f"output_format={s.output_format!r}, transport={s.transport!r})"
        )

    # ------------------------------------------------------------------------ voices

    async def voices(self) -> Sequence[Voice]:
        """The account's voices (``GET /v1/voices``), cached for ``voices_cache_ttl_s``."""
        s = self.settings
        now = time.monotonic()
        if (
            self._voices
            and self._voices[1] == s.base_url
            and now - self._voices[0] < s.voices_cache_ttl_s
        ):
            return list(self._voices[2])
        key = s.resolved_api_key()
        client = self._client()
        try:
            resp = await client.get(
                f"{s.base_url}/v1/voices",
                headers={"xi-api-key": key},
                timeout=httpx.Timeout(s.connect_timeout_s + s.first_audio_timeout_s),
            )
        except Exception as exc:
            raise from_exception(exc, "listing ElevenLabs voices", secret=key) from None
        if resp.status_code in (401, 403) and b"missing_permissions" in resp.content:
            raise make_error(
                ElevenLabsPermissionError,
                f"ElevenLabs answered HTTP {resp.status_code} to listing voices",
                resp.content.decode("utf-8", "replace")[:300],
                secret=key,
            )
        if resp.status_code != 200:
            raise from_http(resp.status_code, resp.content, secret=key)
        try:
            entries = resp.json().get("voices", [])
        except ValueError:
            raise make_error(
                ElevenLabsError,
                "ElevenLabs /v1/voices answered with something not JSON",
                "",
                secret=key,
            ) from None
        voices = [self._voice_from(v) for v in entries if isinstance(v, dict) and v.get("voice_id")]
        voices += self._profile_voices(voices)
        self._voices = (now, s.base_url, voices)
        return list(voices)

    def _voice_from(self, entry: Mapping[str, Any]) -> Voice:
        labels = entry.get("labels") or {}
        # A configured language_code wins: it is what the voice is asked to speak (a
        # multilingual voice labelled "en" speaks German with language_code="de").
        language = self.settings.language_code
        if not language and isinstance(labels, dict):
            language = labels.get("language")
        verified = entry.get("verified_languages") or []
        if not language and verified and isinstance(verified[0], dict):
            language = verified[0].get("language")
        language = language or "en"
        gender = labels.get("gender") if isinstance(labels, dict) else None
        return Voice(
            id=str(entry["voice_id"]),
            name=str(entry.get("name") or entry["voice_id"]),
            language=str(language),
            gender=gender,
        )

    def _profile_voices(self, vendor: Sequence[Voice]) -> list[Voice]:
        """The configured profiles as voices (id = profile name), so that a session or an
        avatar picks one by name like any voice."""
        by_id = {v.id: v for v in vendor}
        out: list[Voice] = []
        for name, profile in self.settings.profiles.items():
            base = by_id.get(profile.voice_id)
            out.append(
                Voice(
                    id=name,
                    name=profile.name or f"{name} ({base.name if base else profile.voice_id})",
                    language=profile.language_code
                    or (base.language if base else None)
                    or self.settings.language_code
                    or "en",
                    gender=base.gender if base else None,
                )
            )
        return out

    async def resolve_voice(self, voice: str) -> Voice:
        """The one voice rule of this source, resolved once per session: a configured profile
        (no listing), a vendor voice id, or a voice's exact name (case-insensitive when that is
        unambiguous). The listing (:meth:`voices`, cached) is consulted when it can answer;
        a key that may not list voices (``401 missing_permissions``: a key limited to speech)
        still speaks with an explicit vendor voice id or profile. A name then cannot be
        resolved: the error says to give the voice id."""
        profile = self.settings.profiles.get(voice)
        if profile is not None:
            return Voice(
                id=voice,
                name=profile.name or voice,
                language=profile.language_code or self.settings.language_code or "en",
            )
        if not voice:
            raise UnknownVoiceError("no ElevenLabs voice given: pass a voice id or name")
        cached = self._cached_voices()
        if cached is None and _VENDOR_ID.fullmatch(voice):
            # An explicit vendor id needs no listing (one round trip less, and a key without
            # voices_read works). Synthesis will say if the vendor does not know it.
            return self._unlisted_voice(voice)
        try:
            voices = list(await self.voices()) if cached is None else cached
        except ElevenLabsPermissionError as exc:
            if _VENDOR_ID.fullmatch(voice) or not any(c.isspace() for c in voice):
                logger.info("ElevenLabs voices cannot be listed with this key (%s); using "
                            "voice %r as a vendor voice id", exc.kind, voice)
                return self._unlisted_voice(voice)
            raise UnknownVoiceError(
                f"ElevenLabs voice {voice!r} cannot be looked up by name: this API key may "
                "not list voices (it lacks the voices_read permission). Give the voice id "
                "instead, or use a key that may list voices."
            ) from exc
        for v in voices:
            if v.id == voice or v.name == voice:
                return v
        folded = [v for v in voices if v.name.casefold() == voice.casefold()]
        if len(folded) == 1:
            return folded[0]
        raise UnknownVoiceError(
            f"unknown ElevenLabs voice {voice!r}; available: "
            f"{', '.join(f'{v.id} ({v.name})' for v in voices) or 'none'}. "
            "Pick a voice id or name from `lipcore voices --tts elevenlabs`."
        )

    def _unlisted_voice(self, voice_id: str) -> Voice:
        return Voice(id=voice_id, name=voice_id, language=self.settings.language_code or "en")

    def _cached_voices(self) -> list[Voice] | None:
        s = self.settings
        if (
            self._voices
            and self._voices[1] == s.base_url
            and time.monotonic() - self._voices[0] < s.voices_cache_ttl_s
        ):
            return list(self._voices[2])
        return None

    def _check_cached_voice(self, voice: str) -> None:
        # Only when the list is cached: a fresh lookup would cost a round trip per utterance.
        if self._voices and self._voices[1] == self.settings.base_url:
            ids = {v.id for v in self._voices[2]}
            if ids and voice not in ids:
                raise UnknownVoiceError(
                    f"unknown ElevenLabs voice {voice!r}; available: {', '.join(sorted(ids))}"
                )

    # ------------------------------------------------------------------------ synthesis

    def synthesize(
        self,
        text: str | AsyncIterable[str],
        *,
        voice: str,
        options: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[TTSChunk]:
        """Speak ``text`` (a string, or LLM deltas ended by the iterable's end).

        Yields :class:`TTSChunk` s of raw PCM with absolute character timings, then an empty
        chunk with ``final=True``. Closing the generator stops the utterance at once."""
        profile = self.settings.profiles.get(voice)
        if profile is not None:  # a named profile: its settings, then the utterance's own
            options = {**profile.options(), **(options or {})}
            voice = profile.voice_id
        s = self.settings.merged(options)
        session = str((options or {}).get("session_id") or _DEFAULT_SESSION)
        if not voice:
            raise UnknownVoiceError("no ElevenLabs voice given: pass voice=<voice id>")
        self._check_cached_voice(voice)
        s.resolved_api_key()  # fail before any I/O when no key is configured
        if s.transport == "http":
            return self._synthesize_http(text, voice, s)
        return self._synthesize_ws(text, voice, s, session)

    # -- WebSocket -------------------------------------------------------------------------

    def _ws_url(self, s: ElevenLabsSettings, voice: str, mode: str) -> str:
        path = "multi-stream-input" if mode == "multi" else "stream-input"
        query = urlencode(s.query(websocket=True))
        return f"{ws_base_url(s.base_url)}/v1/text-to-speech/{quote(voice, safe='')}/{path}?{query}"

    @staticmethod
    def _init_message(s: ElevenLabsSettings, cid: str | None) -> dict[str, Any]:
        msg: dict[str, Any] = {"text": " "}
        if s.voice_settings is not None:
            msg["voice_settings"] = s.voice_settings.model_dump()
        if s.chunk_length_schedule:
            msg["generation_config"] = {"chunk_length_schedule": s.chunk_length_schedule}
        if cid is not None:
            msg["context_id"] = cid
        return msg

    async def _open_socket(self, s: ElevenLabsSettings, voice: str, mode: str) -> VendorSocket:
        key = s.resolved_api_key()
        delay = s.backoff_initial_s
        for attempt in itertools.count():
            sock = VendorSocket(
                url=self._ws_url(s, voice, mode),
                api_key=key,
                mode="multi" if mode == "multi" else "single",
                keepalive_s=s.effective_keepalive_s(),
                idle_close_s=min(s.idle_close_s, s.inactivity_timeout_s * 0.9),
                release_timeout_s=s.context_release_timeout_s,
                max_contexts=s.max_contexts_per_socket,
                stats=self.stats,
            )
            try:
                await sock.open(s.connect_timeout_s)
            except ElevenLabsError as exc:
                if not exc.retryable or attempt >= s.max_retries:
                    raise
                self.stats["reconnects"] += 1
                wait = delay * random.uniform(0.8, 1.2)
                logger.info(
                    "ElevenLabs connect failed (%s); retry %d/%d in %.2f s",
                    exc.kind,
                    attempt + 1,
                    s.max_retries,
                    wait,
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, s.backoff_max_s)
                continue
            self.stats["connections_opened"] += 1
            if mode == "single":
                sock.open_context(None, self._init_message(s, None))
            return sock
        raise AssertionError("unreachable")  # pragma: no cover

    def _pool(self, key: tuple[Any, ...]) -> list[VendorSocket]:
        loop = asyncio.get_running_loop()
        pool = [
            sock
            for sock in self._pools.get(key, [])
            if not sock.dead and self._loops.get(sock.serial) is loop
        ]
        self._pools[key] = pool
        return pool

    async def _acquire(self, s: ElevenLabsSettings, voice: str, session: str) -> VendorSocket:
        loop = asyncio.get_running_loop()
        if s.transport == "single":
            key: tuple[Any, ...] = (
                "single",
                voice,
                s.voice_settings,
                s.chunk_length_schedule,
                s.socket_key(),
            )
        else:
            key = ("multi", session, voice, s.socket_key())
        deadline = time.monotonic() + s.connect_timeout_s
        while True:
            pool = self._pool(key)
            for sock in pool:
                if sock.can_take():
                    if s.transport == "single":
                        pool.remove(sock)
                        self._prewarm(s, voice, key)
                    return sock
            # The shared pool (no session id) serves many sessions: let it grow further.
            limit = (
                s.max_sockets_per_session
                if session != _DEFAULT_SESSION
                else 4 * s.max_sockets_per_session
            )
            if s.transport == "single" or len(pool) < limit:
                sock = await self._open_socket(s, voice, s.transport)
                self._loops[sock.serial] = loop
                if s.transport == "single":
                    self._prewarm(s, voice, key)
                else:
                    self._pool(key).append(sock)
                return sock
            if time.monotonic() >= deadline:
                raise make_error(
                    ElevenLabsContextLimitError,
                    f"no free context slot on this session's {len(pool)} ElevenLabs socket(s) "
                    f"after {s.connect_timeout_s:.0f} s",
                    "",
                    secret=None,
                )
            await asyncio.sleep(0.02)  # slots free on final frames or their release deadline

    def _prewarm(self, s: ElevenLabsSettings, voice: str, key: tuple[Any, ...]) -> None:
        """single: open and initialise the next utterance's socket in the background."""

        async def warm() -> None:
            try:
                sock = await self._open_socket(s, voice, "single")
            except ElevenLabsError as exc:
                logger.info(
                    "ElevenLabs pre-connect failed (%s); next utterance connects itself", exc.kind
                )
                return
            self._loops[sock.serial] = asyncio.get_running_loop()
            self._pool(key).append(sock)

        if not self._pool(key):
            self._spawn(warm())

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    @staticmethod
    def _send_text(sock: VendorSocket, ctx: Context, part: str, flush: bool) -> None:
        if not part and sock.mode == "single":
            return  # stream-input: the end-of-input frame flushes the rest
        msg: dict[str, Any] = {"text": part} if part else {}
        if flush:
            msg["flush"] = True
        if ctx.id is not None:
            msg["context_id"] = ctx.id
        sock.send(ctx, msg)

    @staticmethod
    def _end_turn(sock: VendorSocket, ctx: Context) -> None:
        ctx.awaiting_text = False
        if sock.mode == "multi":
            # End of turn: everything is flushed; close_context makes the final frame follow
            # the last audio of this context.
            sock.send(ctx, {"context_id": ctx.id, "close_context": True})
        else:
            sock.send(ctx, {"text": ""})  # end of input: the vendor finishes and closes

    def _send_whole(self, sock: VendorSocket, ctx: Context, text: str) -> None:
        """A whole text goes out at once, without a task hop (first audio sooner)."""
        if text.strip():
            self._send_text(sock, ctx, text.strip() + " ", True)
        self._end_turn(sock, ctx)

    async def _feed(
        self,
        sock: VendorSocket,
        ctx: Context,
        text: AsyncIterable[str],
        s: ElevenLabsSettings,
    ) -> None:
        try:
            feeder = TextFeeder(flush_on_sentence_end=s.flush_on_sentence_end)
            async for delta in text:
                for part, flush in feeder.feed(delta):
                    self._send_text(sock, ctx, part, flush)
            for part, flush in feeder.end():
                self._send_text(sock, ctx, part, flush)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            ctx.awaiting_text = False
            ctx.queue.put_nowait(_FeedFailed(exc))  # type: ignore[arg-type]
            return
        self._end_turn(sock, ctx)

    async def _synthesize_ws(
        self, text: str | AsyncIterable[str], voice: str, s: ElevenLabsSettings, session: str
    ) -> AsyncIterator[TTSChunk]:
        self.stats["utterances"] += 1
        attempts = 0
        use_http = False
        while True:
            if s.http_fallback and (
                use_http or self._ws_broken_until.get(s.base_url, 0.0) > time.monotonic()
            ):
                async for chunk in self._synthesize_http(text, voice, s, count=False):
                    yield chunk
                return
            try:
                sock = await self._acquire(s, voice, session)
            except (ElevenLabsConnectionError, ElevenLabsTimeoutError) as exc:
                if not s.http_fallback:
                    raise
                # The WebSocket cannot be opened (network, or a proxy without WebSocket
                # support): this utterance and those of the next minute go over HTTP.
                logger.warning(
                    "ElevenLabs WebSocket unavailable (%s); falling back to the HTTP stream for "
                    "%.0f s",
                    exc.kind,
                    s.http_fallback_cooldown_s,
                )
                self.stats["http_fallbacks"] += 1
                self._ws_broken_until[s.base_url] = time.monotonic() + s.http_fallback_cooldown_s
                use_http = True
                continue
            if sock.mode == "multi":
                cid = f"lc{next(self._ids)}-{secrets.token_hex(3)}"
                ctx = sock.open_context(cid, self._init_message(s, cid))
            else:
                ctx = sock.claim()
            sender: asyncio.Task[Any] | None = None
            if isinstance(text, str):
                self._send_whole(sock, ctx, text)
            else:
                sender = self._spawn(self._feed(sock, ctx, text, s))
            yielded = False
            try:
                async for chunk in self._receive(sock, ctx, s):
                    yielded = True
                    yield chunk
                return
            except ElevenLabsConnectionError:
                # A pooled socket the vendor had dropped between utterances: reconnect and
                # retry once per attempt, but only while nothing was spoken yet.
                if yielded or not isinstance(text, str) or attempts >= s.max_retries:
                    raise
                attempts += 1
                self.stats["reconnects"] += 1
                logger.info("ElevenLabs socket was gone before the first audio; reconnecting")
            finally:
                if sender is not None:
                    sender.cancel()
                if not ctx.done:
                    sock.abandon_context(ctx)

    async def _receive(
        self, sock: VendorSocket, ctx: Context, s: ElevenLabsSettings
    ) -> AsyncIterator[TTSChunk]:
        rate = s.sample_rate
        timeline = CharTimeline(s.alignment)
        pts = 0.0
        carry = b""
        got_audio = False
        key = s.resolved_api_key()
        transport = "multi-stream-input" if sock.mode == "multi" else "stream-input"
        while True:
            timeout = s.chunk_timeout_s if got_audio else s.first_audio_timeout_s
            try:
                item: Any = await asyncio.wait_for(ctx.queue.get(), timeout)
            except TimeoutError:
                if ctx.awaiting_text:
                    continue  # the text source is slow; keep-alives hold the context open
                # The vendor went silent mid-stream: the socket is suspect, drop it so the
                # next utterance starts on a fresh one.
                sock.abort()
                raise make_error(
                    ElevenLabsTimeoutError,
                    f"no frame from ElevenLabs for {timeout:.1f} s "
                    f"({'mid-stream' if got_audio else 'waiting for the first audio'})",
                    "",
                    secret=key,
                ) from None
            if isinstance(item, _FeedFailed):
                raise item.exc
            if isinstance(item, Closed):
                raise from_close(
                    item.code, item.reason, item.error_frame, secret=key, transport=transport
                )
            if item.get("error") or (
                "message" in item and "audio" not in item and not item.get("isFinal")
            ):
                sock.abort()
                raise from_close(1008, "", item, secret=key, transport=transport)
            audio = item.get("audio")
            if audio:
                try:
                    pcm = carry + base64.b64decode(audio)
                except (binascii.Error, ValueError):
                    raise make_error(
                        ElevenLabsError, "ElevenLabs sent audio that is not base64", "", secret=key
                    ) from None
                carry = b""
                if len(pcm) % 2:
                    pcm, carry = pcm[:-1], pcm[-1:]  # keep s16 samples whole across frames
                chars = timeline.ws_frame(item, pts)
                got_audio = True
                chunk = TTSChunk(audio=pcm, sample_rate=rate, pts_ms=pts, chars=chars)
                pts = chunk.end_ms
                yield chunk
            if item.get("isFinal") or item.get("is_final"):
                sock.finish_context(ctx)
                yield TTSChunk(audio=b"", sample_rate=rate, pts_ms=pts, final=True)
                return

    # -- HTTP ------------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop or self._http.is_closed:
            # One client per loop: its keep-alive pool is the HTTP path's connection reuse.
            self._http = httpx.AsyncClient(http2=False, follow_redirects=False)
            self._http_loop = loop
        return self._http

    async def _synthesize_http(
        self,
        text: str | AsyncIterable[str],
        voice: str,
        s: ElevenLabsSettings,
        *,
        count: bool = True,
    ) -> AsyncIterator[TTSChunk]:
        if count:
            self.stats["utterances"] += 1
        rate = s.sample_rate
        timeline = CharTimeline(s.alignment)
        pts = 0.0
        pieces: AsyncIterable[str] = _one(text) if isinstance(text, str) else split_sentences(text)
        async for piece in pieces:
            if not piece.strip():
                continue
            offset = pts
            # Requests are separate texts: a space between them keeps the word boundary.
            boundary: tuple[CharTiming, ...] = (CharTiming(" ", pts, pts),) if pts > 0 else ()
            async for line in self._http_lines(piece, voice, s):
                audio = line.get("audio_base64")
                if not audio:
                    continue
                try:
                    pcm = base64.b64decode(audio)
                except (binascii.Error, ValueError):
                    continue
                if len(pcm) % 2:
                    pcm = pcm[:-1]
                chars = boundary + timeline.http_line(line, offset)
                boundary = ()
                chunk = TTSChunk(audio=pcm, sample_rate=rate, pts_ms=pts, chars=chars)
                pts = chunk.end_ms
                yield chunk
        yield TTSChunk(audio=b"", sample_rate=rate, pts_ms=pts, final=True)

    async def _http_lines(
        self, text: str, voice: str, s: ElevenLabsSettings
    ) -> AsyncIterator[dict[str, Any]]:
        key = s.resolved_api_key()
        body: dict[str, Any] = {"text": text.strip(), "model_id": s.model_id}
        if s.language_code:
            body["language_code"] = s.language_code
        if s.voice_settings is not None:
            body["voice_settings"] = s.voice_settings.model_dump()
        if s.seed is not None:
            body["seed"] = s.seed
        if s.apply_text_normalization:
            body["apply_text_normalization"] = s.apply_text_normalization
        url = (
            f"{s.base_url}/v1/text-to-speech/{quote(voice, safe='')}/stream/with-timestamps"
            f"?{urlencode(s.query(websocket=False))}"
        )
        client = self._client()
        timeout = httpx.Timeout(
            connect=s.connect_timeout_s,
            read=s.first_audio_timeout_s,
            write=s.connect_timeout_s,
            pool=s.connect_timeout_s,
        )
        try:
            async with client.stream(
                "POST", url, json=body, headers={"xi-api-key": key}, timeout=timeout
            ) as resp:
                if resp.status_code != 200:
                    raise from_http(resp.status_code, await resp.aread(), secret=key)
                lines = resp.aiter_lines()
                first = True
                while True:
                    wait = s.first_audio_timeout_s if first else s.chunk_timeout_s
                    try:
                        raw = await asyncio.wait_for(anext(lines), wait)
                    except StopAsyncIteration:
                        return
                    except TimeoutError:
                        raise make_error(
                            ElevenLabsTimeoutError,
                            f"no data from the ElevenLabs HTTP stream for {wait:.1f} s "
                            f"({'waiting for the first audio' if first else 'mid-stream'})",
                            "",
                            secret=key,
                        ) from None
                    if not raw.strip():
                        continue
                    try:
                        line = json.loads(raw)
                    except ValueError:
                        continue  # the vendor's own SDK skips unparsable lines too
                    if isinstance(line, dict):
                        first = False
                        yield line
        except ElevenLabsError:
            raise
        except httpx.RemoteProtocolError as exc:
            raise make_error(
                ElevenLabsConnectionError,
                "the ElevenLabs HTTP stream broke off mid-response",
                type(exc).__name__,
                secret=key,
            ) from None
        except Exception as exc:
            raise from_exception(exc, "the ElevenLabs HTTP stream", secret=key) from None

    # ------------------------------------------------------------------------ lifecycle

    async def close_session(self, session_id: str) -> None:
        """Close the sockets of one session (call when the session ends)."""
        for key in [k for k in self._pools if k[0] == "multi" and k[1] == session_id]:
            for sock in self._pools.pop(key):
                await sock.aclose()

    async def aclose(self) -> None:
        """Close every socket and the HTTP client."""
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            for sock in pool:
                try:
                    await sock.aclose()
                except Exception:
                    sock.abort()
        for task in list(self._background):
            task.cancel()
        if self._http is not None:
            try:
                await self._http.aclose()
            except Exception:
                pass
            self._http = None


async def _one(text: str) -> AsyncIterator[str]:
    yield text
