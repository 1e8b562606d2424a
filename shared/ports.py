"""Small interfaces between the service layer and the outside world. Adapters implement them."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from shared.domain.deadletter import DeadLetter, ReplayPlan, ReplayResult

# How a call waits out a Retry-After or a backoff: the scheduler sets it while one of its steps runs, so that
# the wait hands the step's slot to other work (``wait_aside``); elsewhere the wait is a plain sleep.
WAIT_ASIDE: ContextVar[Callable[[float, Callable[[float], object]], None] | None] = ContextVar("dsr_wait_aside", default=None)


def wait_aside(seconds: float, sleep: Callable[[float], object]) -> None:
    """Sleep ``seconds`` with ``sleep``, giving the running step's slot to other work meanwhile (where a
    scheduler runs it)."""
    hook = WAIT_ASIDE.get()
    if hook is None:
        sleep(seconds)
    else:
        hook(seconds, sleep)


@dataclass(frozen=True)
class ApiResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


class AzureML(Protocol):
    """The HTTP seam: success statuses return; every other outcome raises from ``shared.domain.errors``."""

    def get(self, url: str) -> ApiResponse: ...

    def delete(self, url: str) -> ApiResponse: ...

    def post(self, url: str, body: dict[str, Any]) -> ApiResponse:
        """A JSON POST; only Azure Resource Graph's query endpoint is allowed (``UrlPolicy.check_post``)."""
        ...


class BlockBlob(Protocol):
    """One block blob written in staged blocks (a ``.jsonl`` file of a bundle)."""

    def stage(self, block_id: str, data: bytes) -> None: ...

    def commit(self, block_ids: list[str]) -> None: ...

    def upload(self, data: bytes) -> None:
        """The whole blob in one call (what fits in one block and was never staged: one call, not two)."""
        ...

    def digest(self) -> tuple[str, int]:
        """sha256 hex and size of the committed blob, read back in chunks."""
        ...


class BundleStore(Protocol):
    def block_blob(self, name: str, content_type: str = "application/x-ndjson") -> BlockBlob: ...

    def put_json(self, name: str, document: Any) -> None: ...

    def delete(self, name: str) -> None: ...

    def read(self, name: str) -> bytes | None: ...

    def list_names(self, prefix: str) -> list[str]: ...

    def chunks(self, name: str) -> Iterator[bytes]:
        """The blob's content in chunks, read as they are consumed (a bundle file is never held whole)."""
        ...

    def download_url(self, name: str, *, hours: int) -> tuple[str, str]:
        """A read-only URL of the blob valid ``hours`` (a SAS: a secret, never logged), and when it expires."""
        ...


class AuditLog(Protocol):
    """Append-only lines, one blob per request (named by ``audit_blob_name``)."""

    def append(self, request_id: str, lines: list[dict[str, Any]]) -> None: ...


def audit_blob_name(request_id: str) -> str:
    """The request's audit blob in the audit container: where ``AuditLog`` appends, what a delete outcome names."""
    return f"{request_id}.jsonl"


class OutcomePublisher(Protocol):
    def publish(self, event: dict[str, Any]) -> None: ...


class RequestSender(Protocol):
    """Puts a request message (back) on the request queue: continuations and watchdog re-enqueues."""

    def send_request(
        self, request: dict[str, Any], *, message_id: str, delay_seconds: float = 0.0, properties: dict[str, Any] | None = None
    ) -> None: ...


class TokenSource(Protocol):
    """A credential of azure-identity: the HTTP seam asks it for a bearer token."""

    def get_token(self, *scopes: str) -> Any: ...


class StateConflict(Exception):
    """The state document changed since it was read (ETag mismatch), or already exists."""


class StateBackend(Protocol):
    """Four small I/O methods; ``shared.service.state.StateStore`` holds the logic."""

    def read(self, request_id: str) -> tuple[dict[str, Any], str] | None: ...

    def create(self, request_id: str, document: dict[str, Any]) -> str: ...

    def replace(self, request_id: str, document: dict[str, Any], etag: str) -> str:
        """Raises ``StateConflict`` when the ETag no longer matches."""
        ...

    def list_ids(self) -> list[str]: ...


class DeadLetterStore(Protocol):
    """The dead-letter queue of the request queue (``ServiceBusDeadLetters`` implements it)."""

    def peek(self, limit: int) -> list[DeadLetter]: ...

    def replay(self, plans: Sequence[ReplayPlan]) -> list[ReplayResult]: ...

    def close(self) -> None: ...
