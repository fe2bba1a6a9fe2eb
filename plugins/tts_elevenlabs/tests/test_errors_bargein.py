"""Barge-in, the context limit, reconnects, and every failure as a typed error (no hangs)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import pytest
from _el_helpers import chars_of, collect, deltas, text_of
from lipcore_tts_elevenlabs import (
    ElevenLabsAuthError,
    ElevenLabsConnectionError,
    ElevenLabsContextLimitError,
    ElevenLabsError,
    ElevenLabsIdleTimeoutError,
    ElevenLabsInvalidRequestError,
    ElevenLabsQuotaError,
    ElevenLabsRateLimitError,
    ElevenLabsTimeoutError,
)
from lipcore_tts_elevenlabs.mock import MockElevenLabs

from conftest import DE
from lipcore.errors import TTSError, UnknownVoiceError

pytestmark = pytest.mark.anyio

SESSION = {"session_id": "s1"}
LONG = (
    "Es war einmal ein kleines Dorf am Rande eines großen Waldes, in dem die Menschen "
    "jeden Morgen früh aufstanden, um auf den Feldern zu arbeiten und Brot zu backen."
)


async def test_barge_in_closes_the_context_and_drops_its_late_frames(
    mock: MockElevenLabs, make_source: Any
) -> None:
    source = make_source()
    agen = source.synthesize(LONG, voice=DE)
    got = [await agen.__anext__() for _ in range(2)]
    await agen.aclose()  # barge-in
    assert got[0].audio
    chunks = await collect(source.synthesize("Ja, bitte?", voice=DE))
    # the next utterance hears only itself, on the same socket
    assert text_of(chars_of(chunks)) == "Ja, bitte?"
    assert chunks[0].pts_ms == 0.0
    assert mock.connections == 1
    first, _second = mock.contexts("multi")
    assert first.closed_by_client and first.messages[-1] == {
        "context_id": first.context_id,
        "close_context": True,
    }
    await asyncio.sleep(0.3)
    # the vendor kept sending the first context's audio; none of it reached us
    assert first.frames_after_close > 0
    assert source.stats["dropped_late_frames"] > 0


async def test_barge_in_by_cancelling_the_task(mock: MockElevenLabs, make_source: Any) -> None:
    source = make_source()
    started = asyncio.Event()

    async def speak() -> None:
        async for _chunk in source.synthesize(LONG, voice=DE):
            started.set()

    task = asyncio.create_task(speak())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)
    assert mock.contexts("multi")[0].closed_by_client
    chunks = await collect(source.synthesize("Weiter.", voice=DE))
    assert text_of(chars_of(chunks)) == "Weiter."


async def test_rapid_barge_ins_respect_the_five_context_limit(
    mock: MockElevenLabs, make_source: Any
) -> None:
    # The mock closes the socket with 1008 if a sixth context opens while five are active; a
    # closed context stays active there until its flushed audio is out and isFinal was sent.
    source = make_source(max_sockets_per_session=1)
    for _ in range(8):
        agen = source.synthesize(LONG, voice=DE, options=SESSION)
        await agen.__anext__()
        await agen.aclose()
    chunks = await collect(source.synthesize("Fertig.", voice=DE, options=SESSION))
    assert text_of(chars_of(chunks)) == "Fertig."
    assert mock.connections == 1  # never closed for too many contexts
    assert len(mock.contexts("multi")) == 9


async def test_context_limit_overflows_to_a_second_socket(
    mock: MockElevenLabs, make_source: Any
) -> None:
    mock.config.stream_speed = 1.0  # barged-in contexts keep generating on the vendor side
    source = make_source(max_sockets_per_session=2)
    for _ in range(7):
        agen = source.synthesize(LONG, voice=DE, options=SESSION)
        await agen.__anext__()
        await agen.aclose()
    assert mock.connections == 2


async def test_context_limit_waits_then_fails_clearly(
    mock: MockElevenLabs, make_source: Any
) -> None:
    mock.config.stream_speed = 1.0
    source = make_source(max_sockets_per_session=1, connect_timeout_s=0.5)
    for _ in range(5):
        agen = source.synthesize(LONG, voice=DE, options=SESSION)
        await agen.__anext__()
        await agen.aclose()
    t0 = time.perf_counter()
    with pytest.raises(ElevenLabsContextLimitError, match="context slot"):
        await collect(source.synthesize("Sechs.", voice=DE, options=SESSION))
    assert 0.4 < time.perf_counter() - t0 < 2.0
    assert mock.connections == 1 and len(mock.contexts("multi")) == 5  # the vendor saw no 6th


async def test_vendor_closes_an_idle_pooled_socket_and_we_reconnect(
    mock: MockElevenLabs, make_source: Any
) -> None:
    mock.config.idle_timeout_cap_s = 0.5
    source = make_source()
    await collect(source.synthesize("Eins.", voice=DE))
    await asyncio.sleep(1.2)  # the vendor closes the idle socket (1008)
    chunks = await collect(source.synthesize("Zwei.", voice=DE))
    assert text_of(chars_of(chunks)) == "Zwei."
    assert mock.connections == 2


async def test_idle_timeout_mid_utterance_is_typed_and_source_recovers(
    mock: MockElevenLabs, make_source: Any
) -> None:
    mock.config.idle_timeout_cap_s = 0.5
    source = make_source(keepalive_interval_s=30)  # keep-alives too rare for this vendor
    with pytest.raises(ElevenLabsIdleTimeoutError, match=r"inactivity|timeout"):
        await collect(source.synthesize(deltas(["Ich ", "warte."], pauses={1: 1.5}), voice=DE))
    mock.config.idle_timeout_cap_s = None
    chunks = await collect(source.synthesize("Wieder da.", voice=DE))
    assert text_of(chars_of(chunks)) == "Wieder da."


@pytest.mark.parametrize("transport", ["multi", "single", "http"])
async def test_invalid_key(mock: MockElevenLabs, make_source: Any, transport: str) -> None:
    source = make_source(api_key="sk_wrong_key_123456", transport=transport)
    with pytest.raises(ElevenLabsAuthError) as err:
        await collect(source.synthesize("Hallo.", voice=DE))
    assert err.value.kind == "elevenlabs_auth" and "ELEVENLABS_API_KEY" in str(err.value)
    assert "sk_wrong_key_123456" not in str(err.value)
    assert isinstance(err.value, TTSError)


async def test_rejected_handshake_is_an_auth_error(mock: MockElevenLabs, make_source: Any) -> None:
    mock.config.reject_handshake_status = 403
    with pytest.raises(ElevenLabsAuthError):
        await collect(make_source().synthesize("Hallo.", voice=DE))


@pytest.mark.parametrize("transport", ["multi", "single", "http"])
async def test_quota_exceeded(mock: MockElevenLabs, make_source: Any, transport: str) -> None:
    mock.config.fail = "quota"
    source = make_source(transport=transport)
    with pytest.raises(ElevenLabsQuotaError, match="quota"):
        await collect(source.synthesize("Hallo.", voice=DE))
    mock.config.fail = None
    chunks = await collect(source.synthesize("Hallo.", voice=DE))
    assert text_of(chars_of(chunks)) == "Hallo."


@pytest.mark.parametrize("transport", ["multi", "single", "http"])
async def test_server_stalls_mid_stream_times_out_and_source_recovers(
    mock: MockElevenLabs, make_source: Any, transport: str
) -> None:
    mock.config.fail = "stall"
    mock.config.fail_after_frames = 2
    source = make_source(transport=transport, chunk_timeout_s=0.5)
    got: list[Any] = []
    t0 = time.perf_counter()
    with pytest.raises(ElevenLabsTimeoutError, match="mid-stream"):
        async for chunk in source.synthesize(LONG, voice=DE):
            got.append(chunk)
    assert time.perf_counter() - t0 < 3.0
    assert len(got) == 2
    mock.config.fail = None
    chunks = await collect(source.synthesize("Noch einmal.", voice=DE))
    assert text_of(chars_of(chunks)) == "Noch einmal."


async def test_first_audio_timeout(mock: MockElevenLabs, make_source: Any) -> None:
    mock.config.first_audio_delay_ms = 2000
    source = make_source(first_audio_timeout_s=0.4)
    t0 = time.perf_counter()
    with pytest.raises(ElevenLabsTimeoutError, match="first audio"):
        await collect(source.synthesize("Hallo.", voice=DE))
    assert time.perf_counter() - t0 < 1.5


@pytest.mark.parametrize("transport", ["multi", "single", "http"])
async def test_server_error_close_mid_stream(
    mock: MockElevenLabs, make_source: Any, transport: str
) -> None:
    mock.config.fail = "server_error"
    source = make_source(transport=transport)
    with pytest.raises(ElevenLabsConnectionError):
        await collect(source.synthesize(LONG, voice=DE))
    mock.config.fail = None
    assert text_of(chars_of(await collect(source.synthesize("Gut.", voice=DE)))) == "Gut."


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (422, ElevenLabsInvalidRequestError),
        (429, ElevenLabsRateLimitError),
        (401, ElevenLabsAuthError),
    ],
)
async def test_http_statuses(
    mock: MockElevenLabs, make_source: Any, status: int, error: type
) -> None:
    if status == 401:
        source = make_source(transport="http", api_key="nope-nope")
    else:
        mock.config.http_status = status
        source = make_source(transport="http")
    with pytest.raises(error) as err:
        await collect(source.synthesize("Hallo.", voice=DE))
    assert (
        isinstance(err.value, ElevenLabsError)
        and err.value.kind.startswith("elevenlabs_")
        and err.value.code == "tts_error"
    )


async def test_unknown_voice(mock: MockElevenLabs, make_source: Any) -> None:
    source = make_source()
    with pytest.raises(UnknownVoiceError, match="mock-de-anna"):
        await source.resolve_voice("no-such-voice")
    # once the list is known, synthesize refuses at once, before any I/O
    with pytest.raises(UnknownVoiceError):
        source.synthesize("Hallo.", voice="no-such-voice")
    # with a cold cache the vendor's refusal is typed
    cold = make_source()
    with pytest.raises(ElevenLabsInvalidRequestError, match="voice"):
        await collect(cold.synthesize("Hallo.", voice="no-such-voice"))


async def test_unreachable_host_retries_with_backoff_then_fails(make_source: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    source = make_source(
        base_url=f"http://127.0.0.1:{port}",
        max_retries=2,
        backoff_initial_s=0.1,
        http_fallback=False,
    )
    t0 = time.perf_counter()
    with pytest.raises(ElevenLabsConnectionError, match="opening"):
        await collect(source.synthesize("Hallo.", voice=DE))
    elapsed = time.perf_counter() - t0
    assert source.stats["reconnects"] == 2
    assert 0.25 <= elapsed < 6.0  # 0.1 + 0.2 s of backoff (±20 % jitter); a loaded CI is slow


async def test_failing_text_stream_ends_the_utterance(
    mock: MockElevenLabs, make_source: Any
) -> None:
    async def broken() -> Any:
        yield "Hallo "
        raise RuntimeError("LLM went away")

    source = make_source()
    with pytest.raises(RuntimeError, match="LLM went away"):
        await collect(source.synthesize(broken(), voice=DE))
    assert text_of(chars_of(await collect(source.synthesize("Gut.", voice=DE)))) == "Gut."


async def test_no_key_anywhere(mock: MockElevenLabs) -> None:
    from lipcore_tts_elevenlabs import ElevenLabsConfigError, ElevenLabsTTSSource

    source = ElevenLabsTTSSource(base_url=mock.base_url)
    with pytest.raises(ElevenLabsConfigError, match="ELEVENLABS_API_KEY"):
        source.synthesize("Hallo.", voice=DE)


async def test_the_key_never_reaches_logs_or_errors(
    mock: MockElevenLabs, make_source: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = mock.api_key
    errors: list[str] = []
    source = make_source()
    await collect(source.synthesize("Hallo.", voice=DE))
    await collect(source.synthesize("Hallo.", voice=DE, options={"transport": "single"}))
    await collect(source.synthesize("Hallo.", voice=DE, options={"transport": "http"}))
    await source.voices()
    for fail in ("quota", "server_error"):
        mock.config.fail = fail
        try:
            await collect(source.synthesize(LONG, voice=DE))
        except ElevenLabsError as exc:
            errors.append(f"{exc!s} {exc!r} {exc.__cause__!r} {exc.__context__!r}")
    mock.config.fail = None
    wrong = make_source(api_key="sk_the_wrong_one_777")
    for transport in ("multi", "http"):
        try:
            await collect(wrong.synthesize("Hallo.", voice=DE, options={"transport": transport}))
        except ElevenLabsError as exc:
            errors.append(f"{exc!s} {exc!r}")
    assert len(errors) == 4
    assert "xi-api-key: ***" in caplog.text  # the handshake was logged, masked
    for text in [caplog.text, repr(source), *errors]:
        assert secret not in text
        assert "sk_the_wrong_one_777" not in text


async def test_websocket_refused_by_a_proxy_falls_back_to_the_http_stream(
    mock: MockElevenLabs, make_source: Any
) -> None:
    mock.config.reject_handshake_status = 502  # a proxy that does not pass WebSocket upgrades
    source = make_source(max_retries=1, backoff_initial_s=0.05)
    chunks = await collect(source.synthesize("Hallo Welt.", voice=DE))
    assert text_of(chars_of(chunks)) == "Hallo Welt." and chunks[-1].final
    assert source.stats["http_fallbacks"] == 1 and len(mock.http_requests) == 1
    # within the cool-down the next utterance goes straight to HTTP (no upgrade attempts)
    mock.config.reject_handshake_status = None
    await collect(source.synthesize("Noch einmal.", voice=DE))
    assert len(mock.http_requests) == 2 and mock.connections == 0
    # without the fallback the refusal is a typed error that names what happened
    strict = make_source(max_retries=0, http_fallback=False)
    mock.config.reject_handshake_status = 502
    with pytest.raises(ElevenLabsConnectionError, match="HTTP 502"):
        await collect(strict.synthesize("Hallo.", voice=DE))


async def test_fallback_without_cool_down_still_speaks_once_over_http(
    mock: MockElevenLabs, make_source: Any
) -> None:
    mock.config.reject_handshake_status = 502
    source = make_source(max_retries=0, http_fallback_cooldown_s=0)
    chunks = await asyncio.wait_for(collect(source.synthesize("Hallo.", voice=DE)), 10)
    assert text_of(chars_of(chunks)) == "Hallo." and len(mock.http_requests) == 1


async def test_a_refused_key_never_falls_back(mock: MockElevenLabs, make_source: Any) -> None:
    mock.config.reject_handshake_status = 403
    source = make_source()
    with pytest.raises(ElevenLabsAuthError):
        await collect(source.synthesize("Hallo.", voice=DE))
    assert source.stats["http_fallbacks"] == 0 and not mock.http_requests
