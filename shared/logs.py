"""Logs as JSON lines with the requestId on every line, and redaction done by the logging layer itself.

A filter on every handler masks Authorization headers, bearer tokens, JWTs, SAS URLs and signatures, account keys,
query secrets, credential-named fields (JSON, reprs, headers, settings) and e-mail addresses (UPNs), in the
message, in every ``extra`` value and in traceback text, whatever code or library wrote them. That is the
second line: code logs counts, ids and codes, never response bodies (personal data) or request subjects.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("dsr_request_id", default=None)

# Names whose value is a credential wherever they appear: JSON ("k": "v", also escaped inside another JSON
# string, or a Python repr 'k': 'v'), headers (k: v) and settings or query strings (k=v).
_SECRET_NAMES = (
    r"access_token|refresh_token|id_token|client_secret|clientsecret|client_assertion|"  # noqa: S105
    r"accountkey|account_key|sastoken|sas_token|credential|password|passwd|"
    r"x-identity-header|identity_header|identity-header|msi_secret|secret"
)

_PATTERNS = [
    # a SAS URL (a download link): everything after the "?" of a URL whose query is signed goes, not just sig=
    (re.compile(r"(?i)(\bhttps?://[^\s\"'?]+\?)[^\s\"']*?\bsig=[^\s\"']*"), r"\1[REDACTED-SAS]"),
    # an Authorization header of any scheme (Bearer, Basic, SharedKey, ...), quoted or not
    (re.compile(r"(?i)(\bauthorization\\?[\"']?\s*[:=]\s*\\?[\"']?)(?:[A-Za-z-]+\s+)?[^\s\"',;}\\]+"), r"\1[REDACTED]"),
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[REDACTED]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), "[REDACTED-JWT]"),
    (
        re.compile(
            r"(?i)((?:sig|se|skoid|sktid|skt|ske|sks|skv|code|client_secret|access_token|refresh_token|"
            r"\$?skiptoken|\$?continuationtoken|token)=)[^&\s\"']+"
        ),
        r"\1[REDACTED]",
    ),
    (re.compile(r"(?i)((?:AccountKey|SharedAccessKey|SharedAccessSignature|Password|ClientSecret)=)[^;\s\"']+"), r"\1[REDACTED]"),
    # "name": "value" in JSON, \"name\": \"value\" in JSON inside a JSON string, 'name': 'value' in a repr
    (re.compile(rf"(?i)(\\?[\"'](?:{_SECRET_NAMES}|authorization)\\?[\"']\s*:\s*\\?[\"'])[^\"'\\]*"), r"\1[REDACTED]"),
    # name: value / name=value outside quotes (headers, settings, environment dumps)
    (re.compile(rf"(?i)((?<![\w-])(?:{_SECRET_NAMES})\s*[:=]\s*)(?![\"'\\\[])[^\s\"',;&}}\\]+"), r"\1[REDACTED]"),
    # a user principal name (an e-mail address): personal data, never needed in a log line
    (re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])"), "[REDACTED-UPN]"),
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


def _redact_value(value: Any, depth: int = 0) -> Any:
    """Strings anywhere inside an ``extra`` value (a list of URLs, a dict of headers) are redacted too."""
    if isinstance(value, str):
        return redact(value)
    if depth > 8:
        return value
    if isinstance(value, dict):
        return {k: _redact_value(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redact_value(v, depth + 1) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Redacts the message, every ``extra`` field and any traceback text before a handler formats them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_dsr_redacted", False):
            return True  # done by an earlier handler's filter (the record is shared by every handler)
        record._dsr_redacted = True
        if record.args:
            try:
                record.msg = record.getMessage()
            except Exception:  # noqa: BLE001 - a bad format string must not lose the line or crash
                record.msg = f"{record.msg} {record.args!r}"
            record.args = None
        record.msg = redact(str(record.msg))
        for key, value in list(vars(record).items()):
            if key not in _RESERVED:
                setattr(record, key, _redact_value(value))
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            # handlers we do not own print tracebacks; an exception's text can carry a URL with a SAS
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
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


JsonLineFormatter.converter = time.gmtime  # the "Z" in the time field means UTC


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
    quiet_libraries()
    return handler


NOISY_LIBRARIES = ("azure", "urllib3", "msal")


def quiet_libraries() -> None:
    """The Azure SDK and HTTP-library loggers at WARNING (the CLI and the Function app alike)."""
    for noisy in NOISY_LIBRARIES:
        logging.getLogger(noisy).setLevel(logging.WARNING)


# What the Functions host keeps of a record is its message text (the worker forwards ``getMessage()``):
# these fields go into the text, so a log query finds a line by requestId or code.
HOST_FIELDS = ("requestId", "code", "codes", "messageId", "deliveryCount", "status")


def _text(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


class HostMessageFilter(logging.Filter):
    """Appends `` [requestId=... code=...]`` to the message of the app's own records (``dsr.*``), once.

    Installed on the handlers of the Functions worker (``protect_existing_handlers``), after the redacting
    filter; the CLI keeps its JSON lines, where these fields are keys already."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name == "dsr" or record.name.startswith("dsr.")) or getattr(record, "_dsr_host_text", False):
            return True
        if record.args:
            try:
                record.msg = record.getMessage()
            except Exception:  # noqa: BLE001 - a bad format string must not lose the line
                record.msg = f"{record.msg} {record.args!r}"
            record.args = None
        values = {"requestId": getattr(record, "requestId", None) or _request_id.get()}
        values.update({name: getattr(record, name, None) for name in HOST_FIELDS[1:]})
        suffix = " ".join(f"{name}={redact(_text(value))}" for name, value in values.items() if value not in (None, "", []))
        if suffix:
            record.msg = f"{record.msg} [{suffix}]"
        record._dsr_host_text = True
        return True


def protect_existing_handlers() -> None:
    """Add the redacting filter, then the host text filter, to handlers someone else installed (the
    Functions worker's): what reaches the host is redacted and names its request."""
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_dsr", False):
            continue  # the CLI's own JSON-line handler
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
        if not any(isinstance(f, HostMessageFilter) for f in handler.filters):
            handler.addFilter(HostMessageFilter())
