"""Small helpers shared by the plugin's tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from lipcore.interfaces import CharTiming, TTSChunk


async def collect(agen: AsyncIterator[TTSChunk]) -> list[TTSChunk]:
    return [chunk async for chunk in agen]


def chars_of(chunks: Sequence[TTSChunk]) -> list[CharTiming]:
    return [c for chunk in chunks for c in chunk.chars]


def text_of(chars: Sequence[CharTiming]) -> str:
    return "".join(c.char for c in chars)


async def deltas(
    parts: Sequence[str], pause: float = 0.0, pauses: dict[int, float] | None = None
) -> AsyncIterator[str]:
    for i, part in enumerate(parts):
        wait = (pauses or {}).get(i, pause)
        if wait:
            await asyncio.sleep(wait)
        yield part


def assert_same_timings(
    got: Sequence[CharTiming], want: Sequence[CharTiming], tol_ms: float
) -> None:
    assert [c.char for c in got] == [c.char for c in want]
    for g, w in zip(got, want, strict=True):
        assert abs(g.start_ms - w.start_ms) <= tol_ms, (g, w)
        assert abs(g.end_ms - w.end_ms) <= tol_ms, (g, w)


def audio_ms(chunks: Sequence[TTSChunk]) -> float:
    return sum(c.duration_ms for c in chunks)


def no_secret(secret: str, *texts: Any) -> None:
    for t in texts:
        assert secret not in str(t)
