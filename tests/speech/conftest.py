"""Shared helpers for the speech tests: real espeak-ng, no fakes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Coroutine
from typing import Any, TypeVar

import pytest

from lipcore.default_plugins.espeak import EspeakSource
from lipcore.interfaces import PhonemeTiming, TTSChunk

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on a fresh event loop (each test owns its loop).

    A loop already running in this thread (an earlier test that left Playwright's sync API
    open) makes ``asyncio.run`` refuse before it starts the coroutine, and Python then warns
    that the coroutine "was never awaited", which hides the cause: close it and say so.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise RuntimeError(
        "an event loop is already running in the test thread: an earlier test left one "
        "open (Playwright's sync API?), so this test cannot run its own"
    )


async def collect(agen: AsyncIterable[TTSChunk]) -> list[TTSChunk]:
    return [c async for c in agen]


async def deltas(*parts: str, delay: float = 0.0) -> AsyncIterator[str]:
    """Text as an LLM would stream it."""
    for p in parts:
        if delay:
            await asyncio.sleep(delay)
        yield p


def phonemes_of(chunks: list[TTSChunk]) -> list[PhonemeTiming]:
    return [p for c in chunks for p in c.phonemes]


def audio_ms(chunks: list[TTSChunk]) -> float:
    return max(c.end_ms for c in chunks)


@pytest.fixture
def source() -> EspeakSource:
    return EspeakSource()
