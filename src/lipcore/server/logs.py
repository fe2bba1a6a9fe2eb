"""Structured logs without secrets.

:class:`JsonFormatter` writes one JSON object per line; :class:`RedactingFilter` removes the
API key and session tokens (``token=...`` in URLs, which uvicorn's access log would otherwise
print) from every record it sees. :func:`configure_logging` installs both for ``lipcore serve``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

__all__ = ["JsonFormatter", "RedactingFilter", "configure_logging"]

_TOKEN_RE = re.compile(r"(token=)[^&\s\"']+")
# Any query parameter: its name is compared after percent-decoding (``?%74oken=`` is
# ``?token=`` to the server, so it must be to the redaction too).
_PARAM_RE = re.compile(r"([?&;])([^=&\s\"'?#]{1,64})=([^&\s\"'#]*)")
_SECRET_PARAMS = {"token", "key", "api_key", "apikey", "api-key", "access_token", "xi-api-key"}
_STD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Replace secrets in log records by ``***`` (the API key, ``token=`` query values)."""

    def __init__(self, secrets: list[str] | None = None) -> None:
        super().__init__()
        # Each secret also as it appears in a URL (percent-encoded, or with '+' for spaces):
        # a key with URL-special characters would otherwise pass through an access log line.
        variants: set[str] = set()
        for s in secrets or []:
            if s:
                variants |= {s, quote(s, safe=""), quote_plus(s, safe=""), quote(s)}
        self.secrets = sorted(variants, key=len, reverse=True)

    @staticmethod
    def _param(m: re.Match[str]) -> str:
        name = unquote_plus(m.group(2)).strip().lower()
        if name in _SECRET_PARAMS or name.endswith(("token", "_key", "-key")):
            return f"{m.group(1)}{m.group(2)}=***"
        return m.group(0)

    def _clean(self, text: str) -> str:
        text = _TOKEN_RE.sub(r"\1***", text)
        text = _PARAM_RE.sub(self._param, text)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = self._clean(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        for key, value in list(record.__dict__.items()):
            if key not in _STD and isinstance(value, str):
                setattr(record, key, self._clean(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus the record's ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD and not key.startswith("_"):
                plain = isinstance(value, (int, float, str, bool, type(None)))
                out[key] = value if plain else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(*, json_lines: bool = False, level: str = "INFO",
                      secrets: list[str] | None = None) -> logging.Handler:
    """Log to stderr (JSON lines or plain text) through a redacting handler, for the
    ``lipcore``, ``uvicorn`` and ``uvicorn.access`` loggers."""
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter(secrets))
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    for name in ("lipcore", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    return handler
