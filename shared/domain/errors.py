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
            ├── UntrustedUrlError a URL (ours or from a response) points outside the allow-list
            └── BadResponseError  malformed JSON, a paging loop, an unexpected status

``classify_status`` is the one place that maps an HTTP status to this tree.
"""

from __future__ import annotations

import time
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


def classify_status(status: int, *, retry_after: float | None = None, detail: str = "") -> AzureMLError | None:
    """Map an HTTP status to the taxonomy; ``None`` means success (2xx)."""
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


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
