"""The live wire protocol, version 1 (``docs/protocol.md``): message models, the binary frame
header, close codes, and the JSON test vectors shared with the web and Dart clients.

Every JSON message is an object with a ``type``. The models below validate both directions;
the server builds its messages through them in tests, and ``tests/vectors/*.json`` hold their
JSON Schemas plus valid and invalid examples, built by :mod:`lipcore.server.vectors`
(regenerate with ``python -m lipcore.server.vectors tests/vectors``).
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    TypeAdapter,
    field_validator,
    model_validator,
)

from lipcore import patches as _patches

__all__ = [
    "AUDIO_KIND",
    "AUDIO_VISEMES_KIND",
    "CLIENT_MESSAGES",
    "CLOSE_CODES",
    "DEFAULT_CLASSES",
    "HEADER",
    "HEADER_SIZE",
    "PATCH_KIND",
    "PROTOCOL_VERSION",
    "SERVER_MESSAGES",
    "ClientMessage",
    "FrameHeader",
    "encode_viseme",
    "encode_visemes",
    "pack_audio_visemes",
    "pack_frame",
    "parse_client_message",
    "split_audio_visemes",
    "strip_visemes",
    "unpack_frame",
]

PROTOCOL_VERSION = 1

#: The asset contract's viseme classes, in order (``Rest`` is the remainder of every frame).
DEFAULT_CLASSES: tuple[str, ...] = (
    "Rest", "AI", "E", "U", "O", "MBP", "FV", "L", "WQ", "R", "CH", "TH",
)  # fmt: skip

#: Binary frame header: kind u8, version u8, flags u16, utterance u32, pts_ms f64 (little endian).
HEADER = struct.Struct("<BBHId")
HEADER_SIZE = HEADER.size  # 16
AUDIO_KIND = 1
PATCH_KIND = _patches.KIND_MOUTH_PATCH
#: Audio with the viseme event of its span in front (``visemes=inline``): after the header,
#: ``u32`` byte length of a UTF-8 JSON ``visemes`` event, the event, then PCM s16le.
AUDIO_VISEMES_KIND = 3
_JSON_LEN = struct.Struct("<I")

#: WebSocket close codes the server uses (4xxx are application codes, RFC 6455 §7.4.2).
CLOSE_CODES: dict[int, str] = {
    1000: "normal closure (session deleted, or the client said goodbye)",
    1012: "server restarting or shutting down: reconnect after a short delay",
    1009: "message too big",
    1011: "internal server error",
    4400: "protocol error: too many invalid messages",
    4401: "missing or wrong session token",
    4404: "unknown session",
    4408: "client too slow: its send queue stayed full",
    4409: "replaced by a newer connection to the same session",
    4410: "session expired (idle timeout) or closed",
    4421: "the session lives on another worker; the reason names the path to connect to",
}

_EPS = 1e-3


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _OpenMsg(BaseModel):
    """Messages a newer server may extend: clients must ignore unknown fields."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)


def _check_weights(weights: Mapping[str, float]) -> Mapping[str, float]:
    total = 0.0
    for name, w in weights.items():
        if name not in DEFAULT_CLASSES:
            raise ValueError(f"unknown viseme class {name!r}")
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"weight of {name!r} is {w}, outside [0, 1]")
        total += w
    if total > 1.0 + _EPS:
        raise ValueError(f"weights sum to {total:.3f} > 1")
    return weights


class AudioFormat(_Msg):
    format: Literal["s16le"] = "s16le"
    sample_rate: int = Field(gt=0)
    channels: Literal[1] = 1


class Limits(_OpenMsg):
    max_text_chars: int
    max_queued_utterances: int
    max_message_bytes: int


class Hello(_OpenMsg):
    type: Literal["hello"] = "hello"
    protocol: Literal[1] = 1
    session_id: str
    fps: float = Field(gt=0)
    classes: list[str]
    audio: AudioFormat
    lipsync: dict[str, Any] = Field(
        description="type plus asset URLs (the avatar's lipsync_assets)"
    )
    server_time_ms: float
    viseme_events: Literal["batched", "single", "inline"] = "batched"
    lead_ms: float = 0.0
    resumed: bool = False
    limits: Limits | None = None
    viseme_fps: float | None = Field(default=None, gt=0)


class UtteranceStart(_OpenMsg):
    type: Literal["utterance_start"] = "utterance_start"
    utterance: int = Field(ge=1)
    sample_rate: int = Field(gt=0)
    text: str | None = None
    server_time_ms: float | None = None


class FrameModel(_Msg):
    pts_ms: float = Field(ge=0)
    weights: dict[str, float]

    _w = field_validator("weights")(_check_weights)


class Viseme(_Msg):
    """The contract's single-frame event (``viseme_events: "single"``)."""

    type: Literal["viseme"] = "viseme"
    pts_ms: float = Field(ge=0)
    weights: dict[str, float]
    utterance: int = Field(ge=1)

    _w = field_validator("weights")(_check_weights)


class Visemes(_Msg):
    """The batched form: the frames that became final with one audio chunk, or, with
    ``provisional``, a guess at frames not final yet (the start of an utterance), which frames
    with the same ``pts_ms`` in a later event replace."""

    type: Literal["visemes"] = "visemes"
    utterance: int = Field(ge=1)
    frames: list[FrameModel] = Field(min_length=1)
    provisional: StrictBool = False

    @model_validator(mode="after")
    def _increasing(self) -> Visemes:
        pts = [f.pts_ms for f in self.frames]
        if any(b <= a for a, b in itertools.pairwise(pts)):
            raise ValueError("frames must be sorted by pts_ms, strictly increasing")
        return self


class UtteranceEnd(_OpenMsg):
    type: Literal["utterance_end"] = "utterance_end"
    utterance: int = Field(ge=1)
    duration_ms: float = Field(ge=0)
    reason: Literal["done", "stopped", "error"] = "done"


StopReason = Literal["barge_in", "client", "rest", "error", "server"]


class Stop(_OpenMsg):
    type: Literal["stop"] = "stop"
    utterance: int = Field(ge=0, description="the utterance to stop; 0 if none was ever started")
    at_pts_ms: float = Field(ge=0)
    ramp_ms: float = Field(ge=100, le=200)
    reason: StopReason = "client"


class Error(_OpenMsg):
    type: Literal["error"] = "error"
    code: str = Field(min_length=1)
    message: str = Field(min_length=1)
    utterance: int | None = None


class Pong(_Msg):
    type: Literal["pong"] = "pong"
    id: int | str
    client_time_ms: float
    server_time_ms: float


# -- server events as the server sends them --------------------------------------------------
# The session code builds every JSON event through these (one model each, validated), never
# with dict literals of its own; the per-chunk messages (visemes, binary frames) have their
# fast encoders below.


def hello_event(*, session_id: str, fps: float, viseme_fps: float, sample_rate: int,
                lipsync: Mapping[str, Any], server_time_ms: float,
                viseme_events: Literal["batched", "single", "inline"], lead_ms: float,
                resumed: bool, limits: Mapping[str, int]) -> dict[str, Any]:
    return Hello(
        session_id=session_id, fps=fps, viseme_fps=viseme_fps, classes=list(DEFAULT_CLASSES),
        audio=AudioFormat(sample_rate=sample_rate), lipsync=dict(lipsync),
        server_time_ms=server_time_ms, viseme_events=viseme_events, lead_ms=lead_ms,
        resumed=resumed, limits=Limits(**limits),
    ).model_dump()


def utterance_start_event(utterance: int, *, sample_rate: int, text: str | None,
                          server_time_ms: float) -> dict[str, Any]:
    return UtteranceStart(utterance=utterance, sample_rate=sample_rate, text=text,
                          server_time_ms=server_time_ms).model_dump()


def utterance_end_event(utterance: int, *, duration_ms: float,
                        reason: Literal["done", "stopped", "error"] = "done") -> dict[str, Any]:
    return UtteranceEnd(utterance=utterance, duration_ms=duration_ms, reason=reason).model_dump()


def stop_event(utterance: int, *, at_pts_ms: float, ramp_ms: float,
               reason: StopReason) -> dict[str, Any]:
    return Stop(utterance=utterance, at_pts_ms=at_pts_ms, ramp_ms=ramp_ms,
                reason=reason).model_dump()


def error_event(code: str, message: str, *, utterance: int | None = None) -> dict[str, Any]:
    """An ``error``; ``utterance`` only when it belongs to one."""
    return Error(code=code, message=message or code, utterance=utterance).model_dump(
        exclude_none=True)


def pong_event(id: int | str, *, client_time_ms: float, server_time_ms: float) -> dict[str, Any]:
    return Pong(id=id, client_time_ms=client_time_ms, server_time_ms=server_time_ms).model_dump()


# -- client → server --------------------------------------------------------------------------


class Ping(_Msg):
    type: Literal["ping"] = "ping"
    id: int | str
    client_time_ms: float


class Speak(_Msg):
    type: Literal["speak"] = "speak"
    text: str = Field(min_length=1)
    barge_in: bool = False


class TextDelta(_Msg):
    type: Literal["text_delta"] = "text_delta"
    delta: str


class TextEnd(_Msg):
    type: Literal["text_end"] = "text_end"


class StopRequest(_Msg):
    type: Literal["stop"] = "stop"


class AudioStart(_Msg):
    """Opens a streamed recording: binary frames of ``s16le`` mono PCM at the session's
    ``audio.sample_rate`` follow, then :class:`AudioEnd`."""

    type: Literal["audio_start"] = "audio_start"
    text: str | None = None
    language: str | None = Field(default=None, max_length=35)
    barge_in: bool = False


class AudioEnd(_Msg):
    type: Literal["audio_end"] = "audio_end"


ClientMessage = Annotated[
    Ping | Speak | TextDelta | TextEnd | StopRequest | AudioStart | AudioEnd,
    Field(discriminator="type"),
]
_CLIENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(ClientMessage)

SERVER_MESSAGES: dict[str, type[BaseModel]] = {
    "hello": Hello,
    "utterance_start": UtteranceStart,
    "viseme": Viseme,
    "visemes": Visemes,
    "utterance_end": UtteranceEnd,
    "stop": Stop,
    "error": Error,
    "pong": Pong,
}
CLIENT_MESSAGES: dict[str, type[BaseModel]] = {
    "ping": Ping,
    "speak": Speak,
    "text_delta": TextDelta,
    "text_end": TextEnd,
    "stop": StopRequest,
    "audio_start": AudioStart,
    "audio_end": AudioEnd,
}


def parse_client_message(
    text: str,
) -> Ping | Speak | TextDelta | TextEnd | StopRequest | AudioStart | AudioEnd:
    """Parse and validate one client JSON message (raises ``pydantic.ValidationError`` or
    ``ValueError``)."""
    return _CLIENT_ADAPTER.validate_json(text)  # type: ignore[no-any-return]


def validate_server_message(message: Mapping[str, Any]) -> BaseModel:
    """Validate one server → client JSON message against its model (used by tests)."""
    kind = message.get("type")
    model = SERVER_MESSAGES.get(str(kind))
    if model is None:
        raise ValueError(f"unknown server message type {kind!r}")
    return model.model_validate(message)


# -- binary frames ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameHeader:
    kind: int
    version: int
    flags: int
    utterance: int
    pts_ms: float


# -- viseme events, encoded fast ---------------------------------------------------------------
# A speaking session sends one viseme event per TTS chunk; building it as dicts and running
# json.dumps was ~15 % of a speaking session's server CPU. These write the same JSON directly:
# class names are JSON-quoted once, numbers go through fixed-decimal % formats.

_FORMATS: dict[str, str] = {}


def _format(name: str) -> str:
    """``"name":%.3f`` for one class: the quoted key and the number format in one template
    (``%`` formatting rounds like ``round(v, 3)``, about four times faster than ``repr``)."""
    template = _FORMATS.get(name)
    if template is None:
        template = json.dumps(name).replace("%", "%%") + ":%.3f"
        if len(_FORMATS) < 1024:  # the mapper's classes; bounded against odd plugins
            _FORMATS[name] = template
    return template


def _frame_json(pts_ms: float, weights: Any) -> str:
    get = _FORMATS.get
    w = ",".join([(get(k) or _format(k)) % v for k, v in weights.items() if v >= 0.001])
    return f'{{"pts_ms":{pts_ms:.1f},"weights":{{{w}}}}}'


def encode_visemes(utterance: int, frames: Any, *, provisional: bool = False) -> str:
    """The batched ``visemes`` event for ``frames`` (objects with ``pts_ms`` and ``weights``),
    as compact JSON: the same values ``json.dumps`` gives for the event built from
    :meth:`lipcore.interfaces.VisemeFrame.to_event` (pts to 0.1 ms, weights to 0.001, weights
    under 0.001 left out; numbers written with fixed decimals, ``0.500``)."""
    body = ",".join([_frame_json(f.pts_ms, f.weights) for f in frames])
    extra = ',"provisional":true' if provisional else ""
    return f'{{"type":"visemes","utterance":{utterance:d},"frames":[{body}]{extra}}}'


def encode_viseme(utterance: int, frame: Any) -> str:
    """The contract's one-frame ``viseme`` event (``visemes=single``), as compact JSON."""
    body = _frame_json(frame.pts_ms, frame.weights)
    return f'{{"type":"viseme",{body[1:-1]},"utterance":{utterance:d}}}'


def pack_frame(payload: bytes, *, utterance: int, pts_ms: float, kind: int = AUDIO_KIND) -> bytes:
    """A binary frame: the 16-byte header, then ``payload`` (PCM s16le for audio)."""
    return HEADER.pack(kind, PROTOCOL_VERSION, 0, utterance, pts_ms) + payload


def pack_audio_visemes(
    visemes_json: str, audio: bytes, *, utterance: int, pts_ms: float
) -> bytes:
    """A kind-3 frame: the audio of one chunk with the ``visemes`` event (JSON text) of its
    span in front, so a chunk's frames and sound travel as one WebSocket message."""
    event = visemes_json.encode()
    return b"".join((
        HEADER.pack(AUDIO_VISEMES_KIND, PROTOCOL_VERSION, 0, utterance, pts_ms),
        _JSON_LEN.pack(len(event)),
        event,
        audio,
    ))  # fmt: skip


def split_audio_visemes(payload: bytes) -> tuple[str, bytes]:
    """A kind-3 payload → (the ``visemes`` event's JSON text, PCM); ``ValueError`` if torn."""
    if len(payload) < _JSON_LEN.size:
        raise ValueError("audio+visemes payload is shorter than its 4-byte event length")
    (n,) = _JSON_LEN.unpack_from(payload)
    end = _JSON_LEN.size + n
    if end > len(payload):
        raise ValueError(f"audio+visemes event of {n} bytes runs past the frame's end")
    pcm = payload[end:]
    if len(pcm) % 2:
        raise ValueError("audio payload has an odd number of bytes (s16le samples are 2 bytes)")
    try:
        return payload[_JSON_LEN.size : end].decode(), pcm
    except UnicodeDecodeError as exc:
        raise ValueError("audio+visemes event is not UTF-8") from exc


def strip_visemes(frame: bytes) -> bytes:
    """A kind-3 frame without its viseme event: the plain audio frame (kind 1) of the same
    chunk. The server's send queue does this to a congested client's frames (audio first)."""
    _, _, _, utterance, pts_ms = HEADER.unpack_from(frame)
    _, audio = split_audio_visemes(frame[HEADER_SIZE:])
    return pack_frame(audio, utterance=utterance, pts_ms=pts_ms)


def unpack_frame(data: bytes) -> tuple[FrameHeader, bytes]:
    """Split a binary frame into its header and payload; ``ValueError`` if it is malformed.
    (For kind 3 the payload holds the event and the PCM: see :func:`split_audio_visemes`.)"""
    if len(data) < HEADER_SIZE:
        raise ValueError(f"binary frame of {len(data)} bytes is shorter than the 16-byte header")
    kind, version, flags, utterance, pts_ms = HEADER.unpack_from(data)
    if version != PROTOCOL_VERSION:
        raise ValueError(f"binary frame version {version}, expected {PROTOCOL_VERSION}")
    if kind not in (AUDIO_KIND, PATCH_KIND, AUDIO_VISEMES_KIND):
        raise ValueError(f"unknown binary frame kind {kind}")
    payload = data[HEADER_SIZE:]
    if kind == AUDIO_KIND and len(payload) % 2:
        raise ValueError("audio payload has an odd number of bytes (s16le samples are 2 bytes)")
    if kind == AUDIO_VISEMES_KIND:
        split_audio_visemes(payload)  # validates
    return FrameHeader(kind, version, flags, utterance, pts_ms), payload


# -- test vectors --------------------------------------------------------------------------------
