"""Errors that speak to the user: what went wrong, with which input, and what to do.

Every lipcore error carries a stable ``code`` (used in HTTP responses and WebSocket ``error``
events) next to its message. Modules define narrower subclasses next to the code raising them.
"""

from __future__ import annotations

__all__ = [
    "InputError",
    "LimitError",
    "LipcoreError",
    "PluginNotFoundError",
    "TTSError",
    "UnknownVoiceError",
]


class LipcoreError(Exception):
    """Base of all lipcore errors."""

    code: str = "error"
    http_status: int = 500
    #: What an end client may be told when it differs from ``str(exc)``: the message may carry
    #: an upstream vendor's own words (an account's remaining credits, say), which belong in
    #: the operator's log only. The server sends ``public_message or str(exc)``.
    public_message: str | None = None


class InputError(LipcoreError, ValueError):
    """The caller's input cannot be used (text, image, parameter)."""

    code = "bad_input"
    http_status = 422


class LimitError(InputError):
    """The input is over a configured bound (text length, upload size, pixels, queue)."""

    code = "limit_exceeded"
    http_status = 413


class UnknownVoiceError(InputError, LookupError):
    code = "unknown_voice"
    http_status = 404


class PluginNotFoundError(LipcoreError, LookupError):
    """A plugin was asked for by name and none is installed under that name."""

    code = "plugin_not_found"
    http_status = 422


class TTSError(LipcoreError):
    """The speech source failed (vendor error, dropped connection, timeout)."""

    code = "tts_error"
    http_status = 502
