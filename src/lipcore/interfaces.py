"""Typed interfaces for the four plugin roles.

Hooks (``hookspecs.py``) hand over *factories* for these; the per-chunk and per-frame work
happens on the objects below, never through pluggy.

Conventions shared by every role:

* Times are milliseconds as floats on the **utterance's audio timeline**: 0 is the first audio
  sample of the utterance.
* Audio is mono signed 16-bit little-endian PCM (``s16le``) at the chunk's ``sample_rate``.
* Viseme weights map a class name (see :mod:`lipcore.speech.visemes`) to a weight in ``[0, 1]``; the
  weights of one frame sum to at most 1 and the remainder is ``Rest``.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    from lipcore.avatar.mouth import MouthModel
    from lipcore.avatar.store import Avatar
    from lipcore.patches import MouthPatch

__all__ = [
    "AudioMouthRenderer",
    "AudioVisemeEstimator",
    "AudioVisemeStream",
    "CharTiming",
    "LipsyncBackend",
    "MouthPatchStream",
    "MouthRenderer",
    "PhonemeTiming",
    "TTSCapabilities",
    "TTSChunk",
    "TTSSource",
    "Transport",
    "TransportMessage",
    "VisemeFrame",
    "VisemeMapper",
    "VisemeSegment",
    "VisemeStream",
    "Voice",
]


# --------------------------------------------------------------------------- timings


@dataclass(frozen=True, slots=True)
class PhonemeTiming:
    """One phoneme (IPA) with its span on the audio timeline."""

    phoneme: str
    start_ms: float
    end_ms: float
    word: int = -1  # index of the word in the utterance, -1 if unknown


@dataclass(frozen=True, slots=True)
class CharTiming:
    """One character of the spoken text with its span (sources like ElevenLabs time characters)."""

    char: str
    start_ms: float
    end_ms: float


@dataclass(frozen=True, slots=True)
class TTSChunk:
    """A span of synthesized speech: audio plus the timings that fall into it.

    ``pts_ms`` is where ``audio`` starts on the utterance timeline. Timings are absolute on the
    same timeline (not relative to the chunk) and may be empty (a source can send audio before
    its alignment). A source fills ``phonemes`` or ``chars`` depending on its capabilities.
    """

    audio: bytes
    sample_rate: int
    pts_ms: float
    phonemes: tuple[PhonemeTiming, ...] = ()
    chars: tuple[CharTiming, ...] = ()
    final: bool = False

    @property
    def duration_ms(self) -> float:
        return len(self.audio) / 2 / self.sample_rate * 1000.0

    @property
    def end_ms(self) -> float:
        return self.pts_ms + self.duration_ms


# --------------------------------------------------------------------------- TTS


@dataclass(frozen=True, slots=True)
class Voice:
    id: str
    name: str
    language: str  # BCP-47-ish language code, e.g. "de", "en-us"
    gender: str | None = None


@dataclass(frozen=True, slots=True)
class TTSCapabilities:
    timings: Literal["phonemes", "characters"]
    streaming_input: bool = False  # accepts text as an async stream of deltas
    sample_rates: tuple[int, ...] = (22050,)
    # Keeps per-session state (a vendor connection per live session): the server then passes
    # ``options={"session_id": ...}`` to ``synthesize`` and calls ``close_session`` at the end.
    sessions: bool = False


class TTSSource(abc.ABC):
    """A speech synthesizer that yields audio with timings.

    ``synthesize`` is an async generator; closing it (``aclose()``) or cancelling the task that
    iterates it cancels synthesis at once, and nothing more is yielded.
    """

    name: ClassVar[str]
    capabilities: ClassVar[TTSCapabilities]

    @abc.abstractmethod
    async def voices(self) -> Sequence[Voice]:
        """The voices this source offers (a listing; sources cache it)."""

    async def resolve_voice(self, voice: str) -> Voice:
        """The one voice rule: the :class:`Voice` that ``voice`` names, resolved once per
        session (the engine and the server delegate here). The default looks it up in
        :meth:`voices`: an exact id, then an exact name, then a language code (``"en-gb"`` →
        the first voice of that language). A source whose vendor ids or profiles need no
        listing overrides it. :class:`lipcore.errors.UnknownVoiceError` when none matches."""
        from lipcore.errors import UnknownVoiceError

        voices = list(await self.voices())
        for v in voices:
            if v.id == voice:
                return v
        for v in voices:
            if v.name == voice:
                return v
        key = voice.strip().lower().replace("_", "-")
        for v in voices:
            if v.id.lower() == key or v.language.lower() == key:
                return v
        available = ", ".join(sorted(v.id for v in voices)) or "none"
        raise UnknownVoiceError(
            f"unknown voice {voice!r} for TTS source {self.name!r}; available: {available}"
        )

    async def close_session(self, session_id: str) -> None:  # noqa: B027 - optional hook
        """Release what this source holds for one live session (only if it declares
        ``capabilities.sessions``). The default holds nothing."""

    @abc.abstractmethod
    def synthesize(
        self,
        text: str | AsyncIterable[str],
        *,
        voice: str,
        options: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[TTSChunk]:
        """Speak ``text`` (whole, or a stream of deltas ended by the iterable's end)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default has nothing to release."""


# --------------------------------------------------------------------------- visemes


@dataclass(frozen=True, slots=True)
class VisemeSegment:
    """One entry of a viseme *track*: the class a phoneme maps to, before co-articulation."""

    viseme: str
    start_ms: float
    end_ms: float
    phoneme: str = ""


@dataclass(frozen=True, slots=True)
class VisemeFrame:
    """The contract's ``{"type": "viseme", "pts_ms": ..., "weights": {...}}`` event."""

    pts_ms: float
    weights: Mapping[str, float] = field(default_factory=dict)

    def to_event(self) -> dict[str, Any]:
        return {
            "type": "viseme",
            "pts_ms": round(self.pts_ms, 1),
            "weights": {k: round(v, 3) for k, v in self.weights.items() if v >= 0.001},
        }


class VisemeStream(abc.ABC):
    """Incremental co-articulation for one utterance.

    ``push`` adds timings that arrived with a chunk and returns the frames that are final now:
    those whose look-ahead window lies before ``horizon_ms`` (the end of the audio received so
    far). ``finish`` returns the rest, ending at Rest. ``preview`` guesses the frames that are
    not final yet (the start of an utterance, before its look-ahead has arrived).
    """

    @abc.abstractmethod
    def push(
        self,
        *,
        phonemes: Sequence[PhonemeTiming] = (),
        chars: Sequence[CharTiming] = (),
        horizon_ms: float,
    ) -> list[VisemeFrame]: ...

    @abc.abstractmethod
    def finish(self, end_ms: float | None = None) -> list[VisemeFrame]: ...

    def preview(self, until_ms: float) -> list[VisemeFrame]:
        """Best-guess frames from the next final frame up to ``until_ms``, from what is known
        now (the look-ahead beyond it is not). They are provisional: the frames ``push`` and
        ``finish`` return later for the same times replace them. A stream that cannot guess
        returns none (the default)."""
        return []


class VisemeMapper(abc.ABC):
    """Turns phoneme or character timings into a viseme track and sampled weight frames."""

    name: ClassVar[str]

    @abc.abstractmethod
    def track_from_phonemes(
        self, phonemes: Sequence[PhonemeTiming], *, language: str
    ) -> list[VisemeSegment]: ...

    @abc.abstractmethod
    def track_from_characters(
        self, chars: Sequence[CharTiming], *, language: str
    ) -> list[VisemeSegment]: ...

    @abc.abstractmethod
    def sample(
        self, track: Sequence[VisemeSegment], *, fps: float, end_ms: float | None = None
    ) -> list[VisemeFrame]:
        """Co-articulate ``track`` and sample weights at ``fps`` (frames end at Rest)."""

    @abc.abstractmethod
    def stream(self, *, language: str, fps: float) -> VisemeStream:
        """A fresh incremental mapper for one utterance."""


# --------------------------------------------------------------------------- visemes from audio


class AudioVisemeStream(abc.ABC):
    """Visemes estimated from audio as it arrives, for one stretch of speech.

    ``push`` takes the next mono ``s16le`` PCM (at the ``sample_rate`` the stream was opened
    with) and returns the frames that are final now; ``finish`` returns the rest, ending at Rest.
    Frame times are milliseconds from the stream's first sample. A stream may hold back at most
    its estimator's ``lookahead_ms`` of audio before a frame is final.
    """

    @abc.abstractmethod
    def push(self, pcm: bytes) -> list[VisemeFrame]: ...

    @abc.abstractmethod
    def finish(self) -> list[VisemeFrame]: ...


class AudioVisemeEstimator(abc.ABC):
    """Maps speech audio to the viseme classes' weights, with no timings from a speech engine.

    Selected by name like a mapper (``register_audio_viseme_estimators``). ``text``, when the
    words of the audio are known (an agent's LLM text, ``--text``), lets an estimator align them
    for higher accuracy; an estimator that cannot use it ignores it.
    """

    name: ClassVar[str]
    lookahead_ms: ClassVar[float] = 100.0

    @abc.abstractmethod
    def stream(
        self,
        *,
        sample_rate: int,
        fps: float,
        language: str | None = None,
        text: str | None = None,
    ) -> AudioVisemeStream:
        """A fresh streaming estimator for one stretch of speech."""

    def estimate(
        self,
        pcm: bytes,
        *,
        sample_rate: int,
        fps: float,
        language: str | None = None,
        text: str | None = None,
    ) -> list[VisemeFrame]:
        """Whole-file form (offline rendering). The default runs the stream over ``pcm``;
        an estimator that does better with the whole signal overrides it."""
        s = self.stream(sample_rate=sample_rate, fps=fps, language=language, text=text)
        return [*s.push(pcm), *s.finish()]


# --------------------------------------------------------------------------- lipsync


class MouthRenderer(abc.ABC):
    """Composites the mouth overlay onto idle-loop frames (server-side rendering)."""

    @abc.abstractmethod
    def render(self, frame: Any, *, idle_index: int, weights: Mapping[str, float]) -> Any:
        """Return ``frame`` (H×W×3 uint8 RGB) with the mouth for ``weights`` composited,
        placed by the mouth track of idle frame ``idle_index``."""


class MouthPatchStream(abc.ABC):
    """Mouth patches for one utterance, rendered as its audio arrives (variant C).

    ``push`` takes the next mono ``s16le`` PCM (at the rate the stream was opened with) and
    where it starts on the utterance timeline, and returns the patches that are final now;
    ``finish`` returns the rest. However the audio was chunked, the patches equal those of
    :meth:`AudioMouthRenderer.render_audio` on the whole utterance.
    """

    @abc.abstractmethod
    def push(self, pcm: bytes, pts_ms: float | None = None) -> Sequence[MouthPatch]: ...

    @abc.abstractmethod
    def finish(self) -> Sequence[MouthPatch]: ...


class AudioMouthRenderer(MouthRenderer):
    """A renderer that takes audio and yields mouth patches: the audio-driven path.

    A back end whose ``open_renderer`` returns one of these (``driven_by = "audio"``) is
    driven by the utterance's audio, not by visemes. The server streams its patches to
    clients as kind-2 frames (:mod:`lipcore.patches`), and the offline renderer composites
    them onto the idle loop. Found by type (``isinstance``), never by probing attributes.
    """

    @abc.abstractmethod
    def stream(self, *, sample_rate: int) -> MouthPatchStream:
        """A fresh patch stream for one utterance; its frame ``i`` is paired with idle frame
        ``i % len(mouth_track)``."""

    @abc.abstractmethod
    def render_audio(
        self, audio: bytes, sample_rate: int, *, idle_start: int = 0
    ) -> Sequence[MouthPatch]:
        """Every patch of one whole utterance (offline path); patch ``i`` shows audio time
        ``i / fps`` and is rendered for idle frame ``(idle_start + i) % len(mouth_track)``."""

    @abc.abstractmethod
    def composite(self, frame: Any, patch: MouthPatch, *, idle_index: int) -> Any:
        """``frame`` (H×W×3 uint8 RGB) with ``patch`` pasted through the mouth mask, placed
        by the mouth track of idle frame ``idle_index``."""


class LipsyncBackend(abc.ABC):
    """A lipsync variant, selected per avatar by its manifest's ``type``.

    The kind is an open name: whatever a plugin registers (``"sprites"``, ``"mesh"``,
    ``"onnx"``, or a third party's). What the server and the clients need of a back end is
    declared here, never guessed from its files:

    * :attr:`client_assets`: which of the manifest entries ``build_assets`` returned a client
      loads, and under which ``lipsync_assets`` field its URL is sent. Entries not named stay
      on the server (model inputs, build notes).
    * :attr:`web_renderer` and :meth:`static_dir`: an ES module the web client imports to draw
      avatars of this kind (see docs/plugins.md), served from the plugin's own static folder.
    """

    type: ClassVar[str]  # the registered name: "sprites" | "mesh" | "onnx" | a plugin's
    driven_by: ClassVar[Literal["visemes", "audio"]] = "visemes"
    #: manifest entry → the ``lipsync_assets`` field carrying its URL (``"atlas_json":
    #: "atlas_url"``; ``""``: no field of its own). Every entry named here, and no other, is
    #: also listed in ``lipsync_assets.files``.
    client_assets: ClassVar[Mapping[str, str]] = {}
    #: the web renderer module's path inside :meth:`static_dir` (``"renderer.js"``), if any
    web_renderer: ClassVar[str | None] = None

    def static_dir(self) -> Path | None:
        """The folder of files this back end serves to clients (its web renderer module and
        what that module loads), or ``None``. Served under ``/plugins/<type>/static/``."""
        return None

    @abc.abstractmethod
    def build_assets(self, mouth_model: MouthModel, out_dir: Path) -> dict[str, Any]:
        """Write this back end's assets into ``out_dir``; return the manifest's
        ``lipsync_assets`` entries (relative paths)."""

    @abc.abstractmethod
    def open_renderer(self, avatar: Avatar) -> MouthRenderer:
        """A renderer for a loaded avatar; an :class:`AudioMouthRenderer` when
        ``driven_by == "audio"``."""

    def availability(self) -> str | None:
        """``None`` when this back end can run on this machine as configured; otherwise one
        plain sentence saying why not and what to do (e.g. a model that is not configured).
        Servers offer only available back ends and list avatars of the others as unusable."""
        return None


# --------------------------------------------------------------------------- transport


@dataclass(frozen=True, slots=True)
class TransportMessage:
    """One message from a client: text (JSON) or binary."""

    text: str | None = None
    data: bytes | None = None


class Transport(abc.ABC):
    """One client connection. The core speaks through this and never imports a socket library."""

    name: ClassVar[str]

    @abc.abstractmethod
    async def send_text(self, text: str) -> None: ...

    @abc.abstractmethod
    async def send_bytes(self, data: bytes) -> None: ...

    @abc.abstractmethod
    async def receive(self) -> TransportMessage | None:
        """The next client message, or ``None`` once the client is gone."""

    @abc.abstractmethod
    async def close(self, code: int = 1000, reason: str = "") -> None: ...
