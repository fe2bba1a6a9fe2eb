"""Incremental text (LLM deltas) → the vendor's text frames.

The vendor wants text frames that end in a space, and generates better prosody from whole words,
so deltas are held until a word boundary. A finished sentence is flushed at once (optional), so
the first audio does not wait for the vendor's 120-character buffer; the end of the turn
flushes whatever is left.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator

__all__ = ["SENTENCE_END", "TextFeeder", "split_sentences"]

SENTENCE_END = (".", "!", "?", ";", ":", "…", "。", "！", "？")


class TextFeeder:
    """Buffers deltas; ``feed`` returns ``(text, flush)`` frames ready to send."""

    def __init__(self, *, flush_on_sentence_end: bool = True) -> None:
        self.flush_on_sentence_end = flush_on_sentence_end
        self._buffer = ""
        self.sent_any = False

    def feed(self, delta: str) -> list[tuple[str, bool]]:
        if not isinstance(delta, str):
            raise TypeError(f"text deltas must be str, got {type(delta).__name__}")
        self._buffer += delta
        cut = max(self._buffer.rfind(" "), self._buffer.rfind("\n"), self._buffer.rfind("\t"))
        if cut < 0:
            return []
        head, self._buffer = self._buffer[: cut + 1], self._buffer[cut + 1 :]
        words = " ".join(head.split())
        if not words:
            return []
        self.sent_any = True
        flush = self.flush_on_sentence_end and words.endswith(SENTENCE_END)
        return [(words + " ", flush)]

    def end(self) -> list[tuple[str, bool]]:
        """The rest of the turn, flushed (``("", True)``: a flush with no text)."""
        rest = " ".join(self._buffer.split())
        self._buffer = ""
        return [(rest + " " if rest else "", True)] if rest or self.sent_any else []


async def split_sentences(deltas: AsyncIterable[str]) -> AsyncIterator[str]:
    """Whole sentences from a stream of deltas (for transports that take whole texts)."""
    buffer = ""
    async for delta in deltas:
        buffer += delta
        while True:
            cut = -1
            for i, ch in enumerate(buffer):
                if ch in SENTENCE_END and i + 1 < len(buffer) and buffer[i + 1].isspace():
                    cut = i + 1
                    break
            if cut < 0:
                break
            sentence, buffer = buffer[:cut], buffer[cut:]
            if sentence.strip():
                yield sentence.strip()
    if buffer.strip():
        yield buffer.strip()
