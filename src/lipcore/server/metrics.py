"""What a server measures about its sessions: server-added latency and event lag
(:class:`LatencyStats`, behind ``/metrics``), and what each session consumed (:class:`Usage`)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["LatencyStats", "Usage"]


class LatencyStats:
    """A bounded reservoir of server-added latencies (TTS chunk in → frame sent), in ms."""

    def __init__(self, size: int = 20_000) -> None:
        # The last `size` samples: small enough that summary() (a sort) never stalls the loop.
        self.size = size
        self.samples: deque[float] = deque(maxlen=size)

    def add(self, ms: float) -> None:
        self.samples.append(ms)

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {"count": 0}
        s = sorted(self.samples)

        def q(p: float) -> float:
            return round(s[min(len(s) - 1, int(p * len(s)))], 3)

        return {"count": len(s), "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99),
                "max_ms": round(s[-1], 3)}


@dataclass
class Usage:
    """What a session consumed (the TTS vendor bills characters; audio seconds for minutes)."""

    tts_characters: int = 0
    audio_seconds: float = 0.0
    utterances: int = 0
    stopped: int = 0
    errors: int = 0
    dropped_viseme_messages: int = 0
