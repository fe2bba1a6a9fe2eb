"""The send side of one connection: a bounded queue (:class:`Outbox`) drained by one writer
task, which drops viseme messages before audio when a client falls behind and gives up on a
client that cannot keep up at all."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from lipcore.interfaces import Transport
from lipcore.server.metrics import LatencyStats, Usage
from lipcore.server.protocol import strip_visemes

__all__ = ["OutMessage", "Outbox"]

logger = logging.getLogger("lipcore.server.sessions")


class OutMessage:
    """One queued message (a plain class: one is made per message, and a dataclass's
    generated ``__init__`` plus a computed ``size`` cost measurably at hundreds of sessions)."""

    __slots__ = ("data", "inline", "pts_ms", "size", "t_chunk", "t_due", "text", "utterance",
                 "viseme")

    def __init__(
        self,
        text: str | None,
        data: bytes | None,
        utterance: int,  # 0: not part of an utterance (hello, pong, error, stop)
        viseme: bool = False,
        t_chunk: float | None = None,  # perf_counter when the TTS yielded the chunk (audio)
        t_due: float | None = None,  # perf_counter when the chunk was due on the TTS's schedule
        *,
        inline: bool = False,  # audio with its viseme event in front (kind 3)
        pts_ms: float | None = None,  # audio: where it starts on the utterance's timeline
    ) -> None:
        self.text = text
        self.data = data
        self.utterance = utterance
        self.viseme = viseme
        self.t_chunk = t_chunk
        self.t_due = t_due
        self.size = len(data) if data is not None else len(text or "")
        self.inline = inline
        self.pts_ms = pts_ms


class Outbox:
    """A bounded send queue for one connection, drained by one writer task.

    When full, queued viseme messages are dropped first (oldest first): the client renders on
    its audio clock, so a lost frame costs a little motion, lost audio would cost sound. If the
    queue is still full, the client is hopeless and ``on_hopeless`` is called once.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        max_messages: int,
        max_bytes: int,
        on_hopeless: Callable[[str], None],
        latency: LatencyStats | None = None,
        lag: LatencyStats | None = None,
        usage: Usage | None = None,
    ) -> None:
        self.transport = transport
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.on_hopeless = on_hopeless
        self.latency = latency
        self.lag = lag
        self.usage = usage
        self._items: deque[OutMessage] = deque()
        self._bytes = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self.closed = False
        self.hopeless = False
        self.send_started: float | None = None  # monotonic, while a send is in progress
        self.sent = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def put(self, item: OutMessage) -> None:
        if self.closed:
            return
        if len(self._items) >= self.max_messages or self._bytes + item.size > self.max_bytes:
            self._drop_visemes(item.size)
        if len(self._items) >= self.max_messages or self._bytes + item.size > self.max_bytes:
            if item.viseme:
                if self.usage is not None:
                    self.usage.dropped_viseme_messages += 1
                return
            self._give_up("client too slow: its send queue stayed full")
            return
        self._items.append(item)
        self._bytes += item.size
        self._wake.set()

    def _drop_visemes(self, need: int, fraction: float = 1.0) -> None:
        kept: deque[OutMessage] = deque()
        dropped = stripped = 0
        for it in self._items:
            over_bytes = self._bytes + need > self.max_bytes * fraction
            over = over_bytes or len(self._items) - dropped >= self.max_messages * fraction
            if it.viseme and over:
                dropped += 1
                self._bytes -= it.size
                continue
            if it.inline and over_bytes and it.data is not None:
                # Audio with its frames in front (kind 3): keep the audio, drop the frames.
                it.data = strip_visemes(it.data)
                it.inline = False
                self._bytes -= it.size - len(it.data)
                it.size = len(it.data)
                stripped += 1
            kept.append(it)
        if dropped:
            self._items = kept
        if (dropped or stripped) and self.usage is not None:
            self.usage.dropped_viseme_messages += dropped + stripped

    @property
    def over_high_water(self) -> bool:
        """More than half full: the producer should call :meth:`backpressure`."""
        return self._over(0.5)

    def _over(self, fraction: float) -> bool:
        return (len(self._items) > self.max_messages * fraction
                or self._bytes > self.max_bytes * fraction)

    async def backpressure(self) -> None:
        """Called by the producer after each chunk: above the high-water mark (half full) the
        stale viseme messages go first, then the producer waits until the writer has drained
        the queue to a quarter. So a fast TTS runs only as far ahead as the queue allows, and
        a stuck client shows as a stalled send (see :meth:`check_stalled`)."""
        if not self._over(0.5):
            return
        self._drop_visemes(0, fraction=0.5)
        while self._over(0.5) and not self.closed:
            self._drained.clear()
            await self._drained.wait()

    def purge_utterances(self) -> list[OutMessage]:
        """Drop every queued message that belongs to an utterance (barge-in); returns them."""
        kept = deque(it for it in self._items if it.utterance == 0)
        dropped = [it for it in self._items if it.utterance != 0]
        self._items = kept
        self._bytes = sum(it.size for it in kept)
        return dropped

    def _give_up(self, reason: str) -> None:
        if not self.hopeless:
            self.hopeless = True
            self.closed = True
            self._items.clear()
            self._bytes = 0
            self._wake.set()
            self._drained.set()
            self.on_hopeless(reason)

    def check_stalled(self, timeout_s: float) -> None:
        """Called by the janitor: a send blocked longer than ``timeout_s`` means hopeless."""
        started = self.send_started
        if started is not None and time.monotonic() - started > timeout_s:
            self._give_up(f"client too slow: a send blocked for more than {timeout_s:g} s")

    def close(self) -> None:
        self.closed = True
        self._wake.set()
        self._drained.set()

    async def run(self) -> None:
        """The writer: send queued messages in order until closed."""
        transport = self.transport
        while True:
            if not self._items:
                if self.closed:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            item = self._items.popleft()
            self._bytes -= item.size
            if not self._drained.is_set() and not self._over(0.25):
                self._drained.set()
            self.send_started = time.monotonic()
            try:
                if item.data is not None:
                    await transport.send_bytes(item.data)
                    if item.t_chunk is not None:
                        now = time.perf_counter()
                        if self.latency is not None:
                            self.latency.add((now - item.t_chunk) * 1000.0)
                        if self.lag is not None and item.t_due is not None:
                            self.lag.add((now - item.t_due) * 1000.0)
                else:
                    await transport.send_text(item.text or "")
            except Exception as exc:  # the peer went away: the receive loop notices too
                logger.debug("send failed: %s", exc)
                self.closed = True
                return
            finally:
                self.send_started = None
            self.sent += 1
