"""The frames lipcore adds to a Pipecat pipeline.

They are :class:`~pipecat.frames.frames.OutputTransportMessageFrame` s on purpose: Pipecat's
output transports queue such a frame *behind the audio pushed before it* (the audio queue) and
hand it to the transport's ``send_message``, which for the WebSocket transports is the frame
serializer. So an utterance's start, its viseme events and its end reach
:class:`~lipcore_pipecat.LipcoreFrameSerializer` in order with the audio, on any transport, and
an interruption drops the queued ones with the queued audio (they are data frames). Any other
serializer sees ordinary transport messages (``message`` is a plain dict).

Times are milliseconds on the utterance's audio timeline (0 = its first sample), as everywhere
in lipcore; one utterance is one Pipecat TTS audio context (a bot's turn, possibly several
sentences on one timeline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipecat.frames.frames import OutputTransportMessageFrame

from lipcore.interfaces import PhonemeTiming, VisemeFrame

__all__ = [
    "LIPCORE_LABEL",
    "LipcoreTimingsFrame",
    "LipcoreUtteranceEndFrame",
    "LipcoreUtteranceStartFrame",
    "LipcoreVisemesFrame",
]

#: ``message["label"]`` of every lipcore frame, for serializers and observers that filter.
LIPCORE_LABEL = "lipcore"


@dataclass
class LipcoreUtteranceStartFrame(OutputTransportMessageFrame):
    """Before the first audio of an utterance. ``sample_rate`` is the TTS's output rate."""

    message: Any = None
    context_id: str = ""
    sample_rate: int = 0
    text: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[no-untyped-call]
        if self.message is None:
            self.message = {"label": LIPCORE_LABEL, "type": "utterance_start",
                            "context_id": self.context_id, "sample_rate": self.sample_rate,
                            "text": self.text}


@dataclass
class LipcoreVisemesFrame(OutputTransportMessageFrame):
    """The viseme frames that became final with the audio pushed right after this frame
    (``provisional``: a guess at frames not final yet, replaced later by final frames with the
    same ``pts_ms``; see docs/protocol.md). ``frames`` hold lipcore's
    :class:`~lipcore.interfaces.VisemeFrame` s, already shifted by the engine's mouth lead."""

    message: Any = None
    context_id: str = ""
    frames: Sequence[VisemeFrame] = field(default_factory=tuple)
    provisional: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[no-untyped-call]
        if self.message is None:
            # Built lazily by `as_message` for serializers that want a dict; the lipcore
            # serializer encodes `frames` directly (one event per TTS chunk, so it is hot).
            self.message = {"label": LIPCORE_LABEL, "type": "visemes",
                            "context_id": self.context_id}

    def as_message(self) -> dict[str, Any]:
        """The frames as a plain dict (``frames: [{pts_ms, weights}]``)."""
        return {**self.message, "provisional": self.provisional,
                "frames": [{"pts_ms": f.pts_ms, "weights": dict(f.weights)}
                           for f in self.frames]}


@dataclass
class LipcoreUtteranceEndFrame(OutputTransportMessageFrame):
    """After the last audio of an utterance that finished (not after an interruption)."""

    message: Any = None
    context_id: str = ""
    duration_ms: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[no-untyped-call]
        if self.message is None:
            self.message = {"label": LIPCORE_LABEL, "type": "utterance_end",
                            "context_id": self.context_id, "duration_ms": self.duration_ms}


@dataclass
class LipcoreTimingsFrame(OutputTransportMessageFrame):
    """The phoneme times of the audio pushed right after this frame (ms on the utterance's
    timeline), for :class:`LipcoreVideoService`. Pushed by ``LipcoreTTSService`` with
    ``emit_timings=True``; lipcore's serializer sends nothing for it."""

    message: Any = None
    context_id: str = ""
    phonemes: tuple[PhonemeTiming, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        super().__post_init__()  # type: ignore[no-untyped-call]
        if self.message is None:
            self.message = {"label": LIPCORE_LABEL, "type": "timings",
                            "context_id": self.context_id}
