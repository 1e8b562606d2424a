"""The error taxonomy. Every error that reaches a person or an event has a stable ``code``.

    DsrError
    ├── ConfigurationError        a setting is missing or malformed; the app does not start
    ├── RequestRejected           the request message breaks a rule of docs/contract.md §1; never retried
    └── AzureMLError              a call to an Azure ML endpoint did not give what we needed
        ├── RetryableError        worth another try: 429, 5xx, dropped connection, timeout
        │   └── ThrottledError    429 (carries Retry-After)
        └── PermanentError        another try gives the same answer
            ├── NotFoundError     404 / 410: the item is not there (for a DELETE: already gone)
            ├── ForbiddenError    401 / 403: the identity lacks the right
            ├── UntrustedUrlError a URL (ours or from a response) points outside the allow-list, or a
            │                     nextLink leaves the listed collection's own path
            ├── InvalidIdError    an id that cannot be sent as one path segment ('.', '..'): never sent
            ├── LroTimeoutError   a long-running operation did not end within DSR_LRO_DEADLINE_SECONDS
            └── BadResponseError  malformed JSON, a paging loop, an unexpected status
                └── UnreadableResponseError  too large, too slow or too deep to read (bounded reads)

``classify_status`` is the one place that maps an HTTP status to this tree.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime


class DsrError(Exception):
    code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class ConfigurationError(DsrError):
    code = "configuration_error"


@dataclass(frozen=True)
class Violation:
    """One broken rule of the request contract."""

    code: str
    field: str
    message: str

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": self.field, "kind": None, "target": None}


class RequestRejected(DsrError):
    code = "request_rejected"

    def __init__(self, violations: list[Violation], *, request_id: str | None = None, operation: str | None = None) -> None:
        super().__init__("; ".join(f"{v.field}: {v.message}" for v in violations) or "invalid request")
        self.violations = violations
        self.request_id = request_id
        self.operation = operation


class AzureMLError(DsrError):
    code = "azureml_error"
    headers: Mapping[str, str] = {}  # the answer's headers, where there was one (the governor reads its counts)

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


class RetryableError(AzureMLError):
    code = "transient_error"


class ThrottledError(RetryableError):
    code = "throttled"

    def __init__(self, message: str, *, retry_after: float | None, status: int | None = 429) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class PermanentError(AzureMLError):
    code = "permanent_error"


class NotFoundError(PermanentError):
    code = "not_found"


class ForbiddenError(PermanentError):
    code = "forbidden"


class UntrustedUrlError(PermanentError):
    code = "untrusted_url"


class BadResponseError(PermanentError):
    code = "bad_response"


class UnreadableResponseError(BadResponseError):
    """A response we stopped reading: ``response_too_large``, ``response_too_slow`` or ``response_too_deep``.
    Reported for that page or item; never retried (the same server gives the same answer)."""

    code = "response_unreadable"


class InvalidIdError(PermanentError):
    code = "invalid_id"


class LroTimeoutError(PermanentError):
    code = "lro_timeout"


# A service's own error code is echoed only when it looks like one (``ResourceNotFound``, ``UserError.Foo``):
# a server's free text can hold a person's e-mail, a path or a token, and it never reaches an outcome or state.
SAFE_SERVICE_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


def safe_service_code(value: object) -> str:
    """``value`` when it is a plausible service error code, else ``""``."""
    return value if isinstance(value, str) and SAFE_SERVICE_CODE.fullmatch(value) else ""


def classify_status(status: int, *, retry_after: float | None = None, detail: str = "") -> AzureMLError | None:
    """Map an HTTP status to the taxonomy; ``None`` means success (2xx). ``detail`` is the service's own
    error code; it is kept only when it matches ``SAFE_SERVICE_CODE``."""
    detail = safe_service_code(detail)
    suffix = f": {detail}" if detail else ""
    if 200 <= status < 300:
        return None
    if status == 429:
        return ThrottledError(f"throttled (HTTP 429){suffix}", retry_after=retry_after)
    if status in (404, 410):
        return NotFoundError(f"not found (HTTP {status}){suffix}", status=status)
    if status in (401, 403):
        return ForbiddenError(f"access denied (HTTP {status}){suffix}", status=status)
    if status in (408, 500, 502, 503, 504) or status >= 500:
        if retry_after is not None:
            return ThrottledError(f"service unavailable (HTTP {status}){suffix}", retry_after=retry_after, status=status)
        return RetryableError(f"service error (HTTP {status}){suffix}", status=status)
    if 300 <= status < 400:
        return BadResponseError(
            f"unexpected redirect (HTTP {status}); redirects are not followed", status=status, code="unexpected_redirect"
        )
    return PermanentError(f"request failed (HTTP {status}){suffix}", status=status, code=f"http_{status}")


def capped_wait(retry_after: float | None, cap: float, *, default: float) -> float:
    """The one rule for a server-suggested wait: its Retry-After (else ``default``), never more than ``cap``."""
    wait = default if retry_after is None else retry_after
    return max(0.0, min(wait, cap))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait, from delta-seconds or an HTTP date; ``None`` when absent or unreadable (also for
    ``nan``/``inf``). The caller caps it (``DSR_MAX_RETRY_AFTER_SECONDS``): a server does not choose our waits."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
