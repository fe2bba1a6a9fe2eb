"""What a turn is spoken from when it arrives over time: text deltas (``text_delta`` …
``text_end``, :class:`TextFeed`) and streamed PCM (``audio_start``, binary frames,
``audio_end``, :class:`AudioFeed`), each an async iterable that the engine's utterance reads,
bounded in length and ended by the producer going quiet."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from lipcore.errors import LimitError

__all__ = ["AudioFeed", "TextFeed"]

_END = object()


class TextFeed:
    """Deltas of a streamed turn (``text_delta`` … ``text_end``) as an async iterable."""

    def __init__(self, *, max_chars: int, idle_timeout_s: float) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.chars = 0
        self.max_chars = max_chars
        self.idle_timeout_s = idle_timeout_s
        self.ended = False

    def push(self, delta: str) -> None:
        if self.ended:
            return
        if self.chars + len(delta) > self.max_chars:
            raise LimitError(
                f"the streamed turn would be {self.chars + len(delta)} characters; the limit is "
                f"{self.max_chars}. End the turn with text_end and start a new one"
            )
        self.chars += len(delta)
        self.queue.put_nowait(delta)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.queue.put_nowait(_END)

    async def __aiter__(self) -> AsyncIterator[str]:
        while True:
            try:
                item = await asyncio.wait_for(self.queue.get(), self.idle_timeout_s)
            except TimeoutError:
                return  # the producer went quiet: flush what we have
            if item is _END:
                return
            assert isinstance(item, str)
            yield item


class AudioFeed:
    """PCM of a streamed recording (``audio_start``, binary frames, ``audio_end``) as an async
    iterable of ``bytes``; bounded in length, ended by the producer going quiet too."""

    def __init__(self, *, max_bytes: int, idle_timeout_s: float, text: str | None,
                 language: str | None) -> None:
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.bytes = 0
        self.max_bytes = max_bytes
        self.idle_timeout_s = idle_timeout_s
        self.text = text
        self.language = language
        self.ended = False

    def push(self, data: bytes) -> None:
        if self.ended:
            return
        if self.bytes + len(data) > self.max_bytes:
            self.end()
            raise LimitError(
                f"the streamed recording is over its limit of {self.max_bytes // 2} samples; "
                "it ends here. Send audio_end and start a new one"
            )
        self.bytes += len(data)
        self.queue.put_nowait(data)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.queue.put_nowait(_END)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            try:
                item = await asyncio.wait_for(self.queue.get(), self.idle_timeout_s)
            except TimeoutError:
                return  # the producer went quiet: end with what came
            if item is _END:
                return
            assert isinstance(item, bytes)
            yield item
