"""Settings of the ElevenLabs source (pydantic), per engine, per avatar or per session.

The factory takes them as keyword arguments (``ElevenLabsTTSSource(model_id=..., voice_settings=
{...})``); ``synthesize(..., options={...})`` overrides a subset per utterance. The API key is a
:class:`pydantic.SecretStr`: it never shows in ``repr``/``str``, logs or errors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from lipcore.errors import InputError
from lipcore_tts_elevenlabs.errors import ElevenLabsConfigError

__all__ = [
    "DEFAULT_BASE_URL",
    "PER_UTTERANCE_OPTIONS",
    "ElevenLabsSettings",
    "UnknownOptionError",
    "VoiceProfile",
    "VoiceSettings",
    "ws_base_url",
]

DEFAULT_BASE_URL = "https://api.elevenlabs.io"
#: The vendor's data-residency host for the EU (see the README).
EU_BASE_URL = "https://api.eu.residency.elevenlabs.io"

PcmFormat = Literal["pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100"]


class UnknownOptionError(InputError):
    code = "unknown_tts_option"


class VoiceSettings(BaseModel):
    """The vendor's ``voice_settings`` (defaults are the vendor's)."""

    model_config = ConfigDict(extra="forbid")

    stability: float = Field(0.5, ge=0.0, le=1.0)
    similarity_boost: float = Field(0.75, ge=0.0, le=1.0)
    style: float = Field(0.0, ge=0.0, le=1.0)
    use_speaker_boost: bool = True
    speed: float = Field(1.0, ge=0.7, le=1.2)


class VoiceProfile(BaseModel):
    """A named voice with its own settings: an avatar or a session picks it by name as its
    ``voice_id`` (``{"voice_id": "anna-de"}``), through the unchanged server."""

    model_config = ConfigDict(extra="forbid")

    voice_id: str = Field(min_length=1, description="the vendor's voice id")
    name: str | None = None
    model_id: str | None = None
    voice_settings: VoiceSettings | None = None
    language_code: str | None = None

    def options(self) -> dict[str, Any]:
        """The per-utterance options this profile sets."""
        out: dict[str, Any] = {}
        if self.model_id:
            out["model_id"] = self.model_id
        if self.voice_settings is not None:
            out["voice_settings"] = self.voice_settings.model_dump()
        if self.language_code:
            out["language_code"] = self.language_code
        return out


class ElevenLabsSettings(BaseModel):
    """Everything the source needs; every field has a safe default except the key."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    api_key: SecretStr | None = Field(
        None, description="API key; defaults to $ELEVENLABS_API_KEY. Never logged or returned."
    )
    base_url: str = Field(
        default_factory=lambda: os.environ.get("ELEVENLABS_BASE_URL") or DEFAULT_BASE_URL,
        description="https:// host (or proxy prefix); the WebSocket URL follows it (wss/ws).",
    )
    model_id: str = Field(
        default_factory=lambda: _env("ELEVENLABS_MODEL_ID") or "eleven_flash_v2_5",
        validate_default=True,
        description="default $ELEVENLABS_MODEL_ID, else eleven_flash_v2_5 (~75 ms inference)",
    )
    output_format: PcmFormat = Field(
        default_factory=lambda: _env("ELEVENLABS_OUTPUT_FORMAT") or "pcm_22050",
        validate_default=True,
        description="raw s16le PCM so audio goes to clients without decoding "
        "(default $ELEVENLABS_OUTPUT_FORMAT, else pcm_22050)",
    )
    voice_settings: VoiceSettings | None = None
    language_code: str | None = Field(
        default_factory=lambda: _env("ELEVENLABS_LANGUAGE_CODE"),
        validate_default=True,
        description="ISO 639-1, e.g. 'de' (v2.5 models); default $ELEVENLABS_LANGUAGE_CODE",
    )
    transport: Literal["multi", "single", "http"] = Field(
        default_factory=lambda: _env("ELEVENLABS_TRANSPORT") or "multi",
        validate_default=True,
        description="default $ELEVENLABS_TRANSPORT, else multi. "
        "multi: multi-stream-input, one socket per session, a context per "
        "utterance; single: stream-input, a socket per utterance (pre-opened); http: "
        "stream/with-timestamps (NDJSON).",
    )
    alignment: Literal["normalized", "original"] = Field(
        "normalized",
        description="which alignment drives visemes: 'normalized' follows the text as spoken",
    )
    sync_alignment: bool = True
    auto_mode: bool = False
    chunk_length_schedule: list[int] | None = None
    apply_text_normalization: Literal["auto", "on", "off"] | None = None
    enable_logging: bool | None = None
    seed: int | None = Field(None, ge=0, le=4294967295)
    flush_on_sentence_end: bool = Field(
        True, description="streamed text: flush each finished sentence (first audio sooner)"
    )
    # -- connection behaviour -------------------------------------------------------------
    inactivity_timeout_s: int = Field(60, ge=5, le=180)
    keepalive_interval_s: float = Field(8.0, gt=0)
    idle_close_s: float = Field(45.0, gt=0, description="close a pooled socket unused this long")
    connect_timeout_s: float = Field(10.0, gt=0)
    first_audio_timeout_s: float = Field(10.0, gt=0)
    chunk_timeout_s: float = Field(5.0, gt=0, description="max silence between two frames")
    max_retries: int = Field(3, ge=0, le=10)
    backoff_initial_s: float = Field(0.2, gt=0)
    backoff_max_s: float = Field(2.0, gt=0)
    max_contexts_per_socket: int = Field(5, ge=1, le=5)
    max_sockets_per_session: int = Field(2, ge=1, le=8)
    context_release_timeout_s: float = Field(
        10.0, gt=0, description="a closed context holds its slot until isFinal or this long"
    )
    voices_cache_ttl_s: float = Field(300.0, ge=0)
    http_fallback: bool = Field(
        True,
        description="speak over the HTTP stream when the WebSocket cannot be opened (network "
        "or proxy failure, not a refused key); WebSockets are retried after "
        "http_fallback_cooldown_s",
    )
    http_fallback_cooldown_s: float = Field(60.0, ge=0)
    profiles: dict[str, VoiceProfile] = Field(
        default_factory=lambda: _env("ELEVENLABS_VOICE_PROFILES") or {},
        validate_default=True,
        description="named voices with their own model, voice settings and language "
        "(default: JSON in $ELEVENLABS_VOICE_PROFILES)",
    )

    @field_validator("profiles", mode="before")
    @classmethod
    def _parse_profiles(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"voice profiles must be a JSON object: {exc}") from None
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise ValueError(
                f"base_url must be an http(s) URL like {DEFAULT_BASE_URL!r} "
                f"(or {EU_BASE_URL!r} for EU data residency), got {value!r}"
            )
        return value.rstrip("/")

    @field_validator("chunk_length_schedule")
    @classmethod
    def _check_schedule(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or any(not 50 <= v <= 500 for v in value)):
            raise ValueError("chunk_length_schedule entries must each be within 50–500")
        return value

    @property
    def sample_rate(self) -> int:
        return int(self.output_format.split("_", 1)[1])

    def resolved_api_key(self) -> str:
        """The key from the settings or ``$ELEVENLABS_API_KEY``; a clear error if neither."""
        if self.api_key is not None and self.api_key.get_secret_value():
            return self.api_key.get_secret_value()
        env = os.environ.get("ELEVENLABS_API_KEY", "")
        if env:
            return env
        raise ElevenLabsConfigError(
            "no ElevenLabs API key: set the ELEVENLABS_API_KEY environment variable or pass "
            "api_key=... (a secret) in the TTS source's settings"
        )

    def effective_keepalive_s(self) -> float:
        # Keep-alives must beat the vendor's idle close with a margin.
        return min(self.keepalive_interval_s, self.inactivity_timeout_s * 0.5)

    def merged(self, options: Mapping[str, Any] | None) -> ElevenLabsSettings:
        """These settings with per-utterance ``options`` applied (validated)."""
        if not options:
            return self
        update: dict[str, Any] = {}
        for key, value in options.items():
            if key in _IGNORED_OPTIONS:
                continue
            name = _OPTION_ALIASES.get(key, key)
            if name not in PER_UTTERANCE_OPTIONS:
                raise UnknownOptionError(
                    f"unknown ElevenLabs option {key!r}; allowed: "
                    f"{', '.join(sorted(PER_UTTERANCE_OPTIONS | set(_OPTION_ALIASES)))}"
                )
            update[name] = value
        data = self.model_dump()
        data["api_key"] = self.api_key
        data.update(update)
        try:
            return ElevenLabsSettings.model_validate(data)
        except ValidationError as exc:
            raise InputError(f"invalid ElevenLabs option(s): {_short(exc)}") from None

    def query(self, *, websocket: bool) -> dict[str, str]:
        """The vendor query parameters these settings imply."""
        q: dict[str, str] = {"output_format": self.output_format}
        if websocket:
            q["model_id"] = self.model_id
            q["sync_alignment"] = _b(self.sync_alignment)
            q["inactivity_timeout"] = str(self.inactivity_timeout_s)
            if self.auto_mode:
                q["auto_mode"] = "true"
            if self.language_code:
                q["language_code"] = self.language_code
            if self.apply_text_normalization:
                q["apply_text_normalization"] = self.apply_text_normalization
            if self.seed is not None:
                q["seed"] = str(self.seed)
        if self.enable_logging is not None:
            q["enable_logging"] = _b(self.enable_logging)
        return q

    def socket_key(self) -> tuple[Any, ...]:
        """Settings that are part of a socket's URL: sockets are shared only when these match."""
        return (
            self.base_url,
            self.model_id,
            self.output_format,
            self.language_code,
            self.sync_alignment,
            self.auto_mode,
            self.inactivity_timeout_s,
            self.apply_text_normalization,
            self.enable_logging,
            self.seed,
        )


PER_UTTERANCE_OPTIONS: frozenset[str] = frozenset(
    {
        "model_id",
        "output_format",
        "voice_settings",
        "language_code",
        "transport",
        "alignment",
        "auto_mode",
        "chunk_length_schedule",
        "apply_text_normalization",
        "seed",
        "flush_on_sentence_end",
        "sync_alignment",
    }
)
_OPTION_ALIASES = {"model": "model_id", "language": "language_code"}
# Handled by the source itself, not settings.
_IGNORED_OPTIONS = frozenset({"session_id", "context_id"})


def _env(name: str) -> Any:
    # Read at construction, so `lipcore serve --tts elevenlabs` can be configured without code.
    return os.environ.get(name) or None


def _b(value: bool) -> str:
    return "true" if value else "false"


def _short(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
    )


def ws_base_url(base_url: str) -> str:
    """``https://host/prefix`` → ``wss://host/prefix`` (``http`` → ``ws``)."""
    parts = urlsplit(base_url)
    scheme = {"https": "wss", "http": "ws"}[parts.scheme]
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def settings_from_kwargs(kwargs: Mapping[str, Any]) -> ElevenLabsSettings:
    """Build settings from factory keyword arguments with a clear error on bad values."""
    try:
        return ElevenLabsSettings.model_validate(dict(kwargs))
    except ValidationError as exc:
        raise ElevenLabsConfigError(f"invalid ElevenLabs settings: {_short(exc)}") from None
