"""Typed errors of the ElevenLabs source. Every one is a :class:`lipcore.errors.TTSError` with a
stable ``kind`` and a message that says what happened and what to do. Messages never contain
the API key (see :func:`redact`).

``code`` stays the protocol's ``tts_error`` (docs/protocol.md lists the error codes clients may
switch on); the finer classification is ``kind`` (``elevenlabs_auth``, ``elevenlabs_quota``...),
which the message names too."""

from __future__ import annotations

import re

from lipcore.errors import TTSError

__all__ = [
    "ElevenLabsAuthError",
    "ElevenLabsConfigError",
    "ElevenLabsConnectionError",
    "ElevenLabsContextLimitError",
    "ElevenLabsError",
    "ElevenLabsIdleTimeoutError",
    "ElevenLabsInvalidRequestError",
    "ElevenLabsPermissionError",
    "ElevenLabsQuotaError",
    "ElevenLabsRateLimitError",
    "ElevenLabsTimeoutError",
    "redact",
]


class ElevenLabsError(TTSError):
    """Base of the ElevenLabs source's errors."""

    code = "tts_error"
    #: The stable fine-grained class of the failure (also in the message).
    kind = "elevenlabs_error"
    http_status = 502
    #: Whether the same request may succeed if repeated later (a dropped socket, a timeout).
    retryable: bool = False


class ElevenLabsConfigError(ElevenLabsError):
    """The source is configured wrongly (no API key, bad base URL, bad output format)."""

    kind = "elevenlabs_config"
    http_status = 500


class ElevenLabsAuthError(ElevenLabsError):
    """The vendor rejected the API key (HTTP 401 / 403, WebSocket close 1008)."""

    kind = "elevenlabs_auth"
    http_status = 502


class ElevenLabsPermissionError(ElevenLabsAuthError):
    """The API key works but lacks a permission the call needs (``401 missing_permissions``,
    e.g. a key limited to speech that may not list voices)."""

    kind = "elevenlabs_permission"


class ElevenLabsQuotaError(ElevenLabsError):
    """The account's character quota is used up."""

    kind = "elevenlabs_quota"
    http_status = 502


class ElevenLabsRateLimitError(ElevenLabsError):
    """Too many concurrent requests for the plan (HTTP 429)."""

    kind = "elevenlabs_rate_limited"
    http_status = 503
    retryable = True


class ElevenLabsInvalidRequestError(ElevenLabsError):
    """The vendor refused the request's parameters (HTTP 422, or a 1008 naming a bad field)."""

    kind = "elevenlabs_invalid_request"
    http_status = 502


class ElevenLabsIdleTimeoutError(ElevenLabsError):
    """The vendor closed the stream because no text arrived within its inactivity timeout."""

    kind = "elevenlabs_idle_timeout"
    retryable = True


class ElevenLabsContextLimitError(ElevenLabsError):
    """More concurrent contexts than one multi-context socket allows (5)."""

    kind = "elevenlabs_context_limit"
    http_status = 503
    retryable = True


class ElevenLabsTimeoutError(ElevenLabsError):
    """The vendor did not answer in time (connect, first audio, or between chunks)."""

    kind = "elevenlabs_timeout"
    http_status = 504
    retryable = True


class ElevenLabsConnectionError(ElevenLabsError):
    """The connection could not be opened or dropped in the middle of a stream."""

    kind = "elevenlabs_connection"
    http_status = 502
    retryable = True


_KEYLIKE = re.compile(
    r"(?i)(xi[-_]api[-_]key|api[-_]?key|authorization)([\"']?\s*[:=]\s*[\"']?)[^\s\"',}&]+"
)


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every given secret and anything that looks like ``api_key=...`` masked.

    Applied to every vendor message before it becomes part of an error or a log line: vendors
    and proxies sometimes echo request headers or query strings back.
    """
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEYLIKE.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
