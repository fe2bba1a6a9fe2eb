"""Errors of the server, each with its HTTP status and stable code."""

from __future__ import annotations

from lipcore.errors import InputError, LimitError, LipcoreError

__all__ = [
    "AvatarNotFoundError",
    "AvatarUnusableError",
    "BackendUnavailableError",
    "BuildBusyError",
    "NotConnectedError",
    "QueueFullError",
    "SessionGoneError",
    "SessionNotFoundError",
    "TooManySessionsError",
    "UnauthorizedError",
]


class UnauthorizedError(LipcoreError):
    code = "unauthorized"
    http_status = 401


class AvatarNotFoundError(LipcoreError, LookupError):
    code = "avatar_not_found"
    http_status = 404


class AvatarUnusableError(LipcoreError):
    """The avatar exists, but its back end is not installed or cannot run here."""

    code = "avatar_unusable"
    http_status = 409
class BackendUnavailableError(LipcoreError):
    """The avatar's lip-sync back end cannot run on this server as configured (e.g. no model).
    A fault of the server, not of the client's request: 503, with the back end's reason."""

    code = "backend_unavailable"
    http_status = 503


class SessionNotFoundError(LipcoreError, LookupError):
    code = "session_not_found"
    http_status = 404


class SessionGoneError(LipcoreError, LookupError):
    code = "session_expired"
    http_status = 410


class NotConnectedError(LipcoreError):
    code = "not_connected"
    http_status = 409


class QueueFullError(LimitError):
    code = "queue_full"
    http_status = 429


class TooManySessionsError(LimitError):
    code = "too_many_sessions"
    http_status = 429


class BuildBusyError(LimitError):
    code = "build_busy"
    http_status = 429


class BadMessageError(InputError):
    code = "bad_message"
