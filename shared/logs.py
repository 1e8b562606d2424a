"""Logs as JSON lines with the requestId on every line, and redaction done by the logging layer itself.

A filter on every handler masks bearer tokens, JWTs, SAS signatures, account keys and query secrets,
whatever code wrote them. Code logs counts, ids and codes; never response bodies (personal data).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("dsr_request_id", default=None)

_PATTERNS = [
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[REDACTED]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), "[REDACTED-JWT]"),
    (re.compile(r"(?i)((?:sig|se|skoid|sktid|skt|ske|sks|skv|code|client_secret|access_token|refresh_token|"
                r"\$?skiptoken|\$?continuationtoken|token)=)[^&\s\"']+"), r"\1[REDACTED]"),
    (re.compile(r"(?i)((?:AccountKey|SharedAccessKey|SharedAccessSignature|Password|ClientSecret)=)[^;\s\"']+"),
     r"\1[REDACTED]"),
    (re.compile(r"(?i)(\"(?:access_token|accountKey|credential|clientSecret|password|sasToken|"
                r"x-identity-header|authorization)\"\s*:\s*\")[^\"]*"), r"\1[REDACTED]"),
    (re.compile(r"(?i)(x-identity-header[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"), r"\1[REDACTED]"),
]

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@contextlib.contextmanager
def request_context(request_id: str) -> Iterator[None]:
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


def current_request_id() -> str | None:
    return _request_id.get()


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        record.msg = redact(str(record.msg))
        for key, value in list(vars(record).items()):
            if key not in _RESERVED and isinstance(value, str):
                setattr(record, key, redact(value))
        if not hasattr(record, "requestId"):
            record.requestId = _request_id.get()
        return True


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "requestId": getattr(record, "requestId", None) or _request_id.get(),
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__  # the type only: no traceback, no message
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


JsonLineFormatter.converter = __import__("time").gmtime  # type: ignore[assignment]


def configure_logging(level: str = "INFO", stream: Any = None) -> logging.Handler:
    """JSON lines on stderr for the CLI; under Functions the host's handler gets the filter too."""
    root = logging.getLogger()
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(RedactingFilter())
    for old in list(root.handlers):
        if getattr(old, "_dsr", False):
            root.removeHandler(old)
    handler._dsr = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("azure", "urllib3", "msal"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler


def protect_existing_handlers() -> None:
    """Add the redacting filter to handlers someone else installed (the Functions worker's)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
