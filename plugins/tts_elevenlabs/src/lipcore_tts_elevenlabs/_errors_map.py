"""Vendor failures (close codes, error frames, HTTP statuses, exceptions) → typed errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from lipcore_tts_elevenlabs.errors import (
    ElevenLabsAuthError,
    ElevenLabsConnectionError,
    ElevenLabsContextLimitError,
    ElevenLabsError,
    ElevenLabsIdleTimeoutError,
    ElevenLabsInvalidRequestError,
    ElevenLabsQuotaError,
    ElevenLabsRateLimitError,
    ElevenLabsTimeoutError,
    redact,
)

_WHAT_TO_DO: dict[type[ElevenLabsError], str] = {
    ElevenLabsAuthError: "check ELEVENLABS_API_KEY (or the api_key setting) and its permissions",
    ElevenLabsQuotaError: "the account's character quota is used up; upgrade the plan or wait "
    "for the quota to reset",
    ElevenLabsRateLimitError: "too many concurrent requests for the plan; retry shortly or "
    "lower the concurrency",
    ElevenLabsInvalidRequestError: "check the voice id, model_id, output_format and voice settings",
    ElevenLabsIdleTimeoutError: "text arrived too slowly; the source sends keep-alives while an "
    "utterance waits for text, so raise inactivity_timeout_s if the text source stalls longer",
    ElevenLabsContextLimitError: "at most 5 utterances may be open per socket; finish or stop "
    "one first",
    ElevenLabsConnectionError: "the source reconnects on the next utterance; check the network "
    "or the base_url",
    ElevenLabsTimeoutError: "the vendor did not answer in time; the next utterance reconnects",
}


def _text_of(frame: Mapping[str, Any] | None) -> str:
    if not frame:
        return ""
    parts = [str(frame.get(k) or "") for k in ("error", "message", "status", "detail")]
    return " ".join(p for p in parts if p)


def classify_text(text: str, *, default: type[ElevenLabsError]) -> type[ElevenLabsError]:
    t = text.lower()
    if "quota" in t:
        return ElevenLabsQuotaError
    if "max_active_conversations" in t or "simultaneous contexts" in t:
        return ElevenLabsContextLimitError
    if "too_many_concurrent" in t or "rate limit" in t or "too many" in t:
        return ElevenLabsRateLimitError
    if "input_timeout" in t or "inactiv" in t or "within the timeout" in t:
        return ElevenLabsIdleTimeoutError
    if "api key" in t or "api_key" in t or "unauthorized" in t or "authenticat" in t:
        return ElevenLabsAuthError
    if "voice" in t or "model" in t or "invalid" in t or "format" in t:
        return ElevenLabsInvalidRequestError
    return default


def make_error(
    cls: type[ElevenLabsError], what: str, vendor: str, *, secret: str | None
) -> ElevenLabsError:
    vendor = redact(vendor, secret).strip()
    detail = f": {vendor[:300]}" if vendor else ""
    advice = _WHAT_TO_DO.get(cls, "retry later")
    err = cls(f"{what}{detail} ({cls.kind}). What to do: {advice}")
    # End clients get the same without the vendor's own words (quota texts name the account's
    # credits); the operator's log keeps them.
    err.public_message = f"{what} ({cls.kind})"
    return err


def from_close(
    code: int | None,
    reason: str,
    error_frame: Mapping[str, Any] | None,
    *,
    secret: str | None,
    transport: str,
) -> ElevenLabsError:
    """A WebSocket that ended before the utterance's final frame."""
    vendor = " ".join(p for p in (_text_of(error_frame), reason) if p)
    if code == 1008 or error_frame:
        cls = classify_text(vendor, default=ElevenLabsInvalidRequestError)
    else:
        cls = ElevenLabsConnectionError
    what = f"ElevenLabs closed the {transport} stream (close code {code})"
    return make_error(cls, what, vendor, secret=secret)


def from_http(status: int, body: bytes | str, *, secret: str | None) -> ElevenLabsError:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    vendor = text
    try:
        data = json.loads(text)
        detail = data.get("detail", data) if isinstance(data, dict) else data
        vendor = _text_of(detail) if isinstance(detail, Mapping) else json.dumps(detail)[:300]
    except (ValueError, AttributeError):
        pass
    if status in (401, 403):
        cls = classify_text(vendor, default=ElevenLabsAuthError)
        if cls not in (ElevenLabsQuotaError, ElevenLabsAuthError):
            cls = ElevenLabsAuthError
    elif status == 429:
        cls = classify_text(vendor, default=ElevenLabsRateLimitError)
        if cls is not ElevenLabsQuotaError:
            cls = ElevenLabsRateLimitError
    elif status in (400, 404, 422):
        cls = classify_text(vendor, default=ElevenLabsInvalidRequestError)
        if cls not in (ElevenLabsQuotaError,):
            cls = ElevenLabsInvalidRequestError
    elif status >= 500:
        cls = ElevenLabsConnectionError
    else:
        cls = ElevenLabsError
    return make_error(cls, f"ElevenLabs answered HTTP {status}", vendor, secret=secret)


def from_exception(exc: BaseException, what: str, *, secret: str | None) -> ElevenLabsError:
    """Low-level exceptions (OS errors, timeouts, protocol errors) → typed errors."""
    if isinstance(exc, ElevenLabsError):
        return exc
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return make_error(ElevenLabsTimeoutError, f"{what} timed out", "", secret=secret)
    return make_error(
        ElevenLabsConnectionError, f"{what} failed", f"{type(exc).__name__}: {exc}", secret=secret
    )
