r"""Request state: one JSON document per requestId, changed only under optimistic concurrency (ETags).

    received -> in_progress -> completed | partially_completed | failed | rejected | cancelled
                     \-> cancelling (a cancel was asked; the worker stops at its next checkpoint) -> cancelled

A cancel of a request the store has never seen leaves a ``cancelled`` tombstone (no request, no outcome):
its first delivery is then cancelled at once, with the outcome of its own operation.

The logic lives here once; a backend is four small I/O methods (``StateBackend``), as in powertools'
idempotency persistence layer. A worker owns a request while its lease (``leaseUntil``) is fresh; it
renews the lease as it works and saves checkpoints under it. A lapsed lease may be taken over by the
next worker, which resumes from the last checkpoint.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.domain.contract import parse_rfc3339
from shared.domain.errors import DsrError, RetryableError
from shared.domain.outcome import STATUSES
from shared.ports import StateBackend, StateConflict

log = logging.getLogger("dsr.state")

FINAL = STATUSES  # a document in one of these is finished: never claimed again
DUE_DAYS = 30  # GDPR art. 12(3): one month from receipt
_STAMP = "%Y-%m-%dT%H:%M:%SZ"


def due_by(request_json: dict[str, Any], received: float) -> str:
    """The request's own ``dueBy`` (in UTC), or 30 days after it was first received."""
    given = request_json.get("dueBy")
    parsed = parse_rfc3339(given) if isinstance(given, str) else None
    when = parsed.astimezone(UTC) if parsed else datetime.fromtimestamp(received, UTC) + timedelta(days=DUE_DAYS)
    return when.strftime(_STAMP)


def is_tombstone(doc: dict[str, Any]) -> bool:
    """A cancel that came before the request itself: nothing but the mark."""
    return doc.get("status") == "cancelled" and doc.get("outcome") is None


class RequestBusy(RetryableError):
    """Another worker holds a live lease on this request; come back later."""

    code = "request_in_progress"

    def __init__(self, request_id: str, lease_until: float) -> None:
        super().__init__(f"request {request_id} is being processed by another worker")
        self.lease_until = lease_until


class LeaseLost(RetryableError):
    code = "lease_lost"


class RequestIdReused(DsrError):
    code = "request_id_reused"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def request_fingerprint(request_json: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request_json, sort_keys=True).encode()).hexdigest()


@dataclass
class Claim:
    """The outcome of trying to take a request: ``owned`` (go on), ``final`` (done before)."""

    kind: str
    document: dict[str, Any]
    etag: str = ""

    @property
    def checkpoint(self) -> Any:
        return self.document.get("checkpoint")

    @property
    def outcome(self) -> dict[str, Any] | None:
        return self.document.get("outcome")


class StateStore:
    def __init__(
        self, backend: StateBackend, *, lease_seconds: float, owner: str | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.backend = backend
        self.lease_seconds = lease_seconds
        self.owner = owner or worker_id()
        self.clock = clock
        self._lock = threading.Lock()

    def _stamp(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock()))

    def claim(self, request_id: str, request_json: dict[str, Any], *, extra: dict[str, Any] | None = None) -> Claim:
        """Take the request, or say why not. Each claim has its own owner token, so two deliveries of one
        request in the same process are told apart as well as two processes are. A new request (the usual case:
        each workspace of a fan-out is one) is created without a read first; a create that meets it reads it."""
        fingerprint = request_fingerprint(request_json)
        owner = f"{self.owner}:{uuid.uuid4().hex[:8]}"
        for attempt in range(20):
            found = self.backend.read(request_id) if attempt else None
            now = self.clock()
            if found is None:
                doc = {
                    "requestId": request_id,
                    "status": "in_progress",
                    "receivedAt": self._stamp(),
                    "dueBy": due_by(request_json, now),
                    "operation": request_json.get("operation"),
                    "fingerprint": fingerprint,
                    "request": request_json,
                    "attempts": 1,
                    "owner": owner,
                    "leaseUntil": now + self.lease_seconds,
                    "createdAt": self._stamp(),
                    "updatedAt": self._stamp(),
                    "startedAt": None,
                    "checkpoint": None,
                    "outcome": None,
                    "continuations": 0,
                    "requeues": 0,
                    **(extra or {}),
                }
                try:
                    etag = self.backend.create(request_id, doc)
                except StateConflict:
                    continue
                return Claim("owned", doc, etag)
            doc, etag = found
            if doc.get("fingerprint") not in (None, fingerprint):
                raise RequestIdReused(
                    f"requestId {request_id} was already used for a different request; a new request needs a new requestId"
                )
            if doc.get("status") in FINAL and not is_tombstone(doc):
                return Claim("final", doc, etag)
            lease_until = float(doc.get("leaseUntil") or 0)
            if doc.get("owner") is not None and lease_until > now:
                raise RequestBusy(request_id, lease_until)
            if is_tombstone(doc):  # cancelled before it arrived: take it only to give it its cancelled outcome
                doc = doc | {
                    "operation": request_json.get("operation"),
                    "fingerprint": fingerprint,
                    "request": request_json,
                    "receivedAt": self._stamp(),
                    "dueBy": due_by(request_json, now),
                }
            taken = {
                **doc,
                "status": "cancelling" if doc.get("cancelRequested") else "in_progress",
                "owner": owner,
                "leaseUntil": now + self.lease_seconds,
                "attempts": int(doc.get("attempts") or 0) + 1,
                "updatedAt": self._stamp(),
            }
            try:
                new_etag = self.backend.replace(request_id, taken, etag)
            except StateConflict:
                continue
            if doc.get("owner") is not None:
                log.info("took over a request whose lease had lapsed", extra={"attempts": taken["attempts"]})
            return Claim("owned", taken, new_etag)
        raise RetryableError("the request state kept changing under us", code="state_contention")

    def update(self, claim: Claim, *, keep_lease: bool = True, **changes: Any) -> None:
        """Change the owned document (renewing the lease); ``LeaseLost`` if someone else took it. A change
        made by someone other than a worker (a cancel, the watchdog's deadline mark) is kept: the write is
        rebased on it, and the owner sees it in ``claim.document``."""
        with self._lock:
            base, etag = claim.document, claim.etag
            for _ in range(10):
                lease = self.clock() + self.lease_seconds if keep_lease else 0.0
                doc = {**base, **changes, "leaseUntil": lease, "updatedAt": self._stamp()}
                try:
                    claim.etag = self.backend.replace(doc["requestId"], doc, etag)
                except StateConflict:
                    found = self.backend.read(claim.document["requestId"])
                    if found is None or found[0].get("owner") != claim.document.get("owner") or found[0].get("status") in FINAL:
                        raise LeaseLost("another worker took over this request") from None
                    base, etag = found
                    continue
                claim.document = doc
                return
            raise LeaseLost("the request state kept changing under this worker")

    def renew(self, claim: Claim) -> None:
        self.update(claim)

    def save_checkpoint(self, claim: Claim, checkpoint: Any) -> None:
        self.update(claim, checkpoint=checkpoint)

    def release(self, claim: Claim, *, continuation: int) -> None:
        """Stop working on it for now (time budget spent; the checkpoint is saved): the next worker may
        start at once."""
        self.update(claim, keep_lease=False, continuations=continuation, owner=None)

    def abandon(self, claim: Claim) -> None:
        """Give the request up after a failure, keeping its checkpoint: a redelivery may take it at once."""
        try:
            self.update(claim, keep_lease=False, owner=None)
        except Exception as exc:  # noqa: BLE001 - the lease then simply lapses
            log.warning("could not release the request after a failure", extra={"error": type(exc).__name__})

    def finish(self, claim: Claim, outcome: dict[str, Any]) -> None:
        self.update(claim, keep_lease=False, status=outcome["data"]["status"], outcome=outcome, checkpoint=None, owner=None)

    def read(self, request_id: str) -> tuple[dict[str, Any], str] | None:
        return self.backend.read(request_id)

    def request_cancel(self, request_id: str) -> tuple[str, dict[str, Any]]:
        """Mark a request cancelled: ``accepted`` (a running or queued request will stop; one never seen gets a
        tombstone), ``already`` (asked before), or ``conflict`` (it had finished: nothing changed)."""
        for _ in range(20):
            found = self.backend.read(request_id)
            stamp = self._stamp()
            if found is None:
                tombstone = {
                    "requestId": request_id,
                    "status": "cancelled",
                    "cancelRequested": True,
                    "cancelRequestedAt": stamp,
                    "operation": None,
                    "fingerprint": None,
                    "request": None,
                    "outcome": None,
                    "owner": None,
                    "leaseUntil": 0.0,
                    "createdAt": stamp,
                    "updatedAt": stamp,
                }
                try:
                    self.backend.create(request_id, tombstone)
                except StateConflict:
                    continue
                return "accepted", tombstone
            doc, etag = found
            if doc.get("cancelRequested"):
                return "already", doc
            if doc.get("status") in FINAL:
                return "conflict", doc
            marked = {**doc, "cancelRequested": True, "cancelRequestedAt": stamp, "status": "cancelling", "updatedAt": stamp}
            try:
                self.backend.replace(request_id, marked, etag)
            except StateConflict:
                continue
            return "accepted", marked
        raise RetryableError("the request state kept changing under us", code="state_contention")

    def _documents(self) -> Iterator[tuple[dict[str, Any], str]]:
        """Every request document with its ETag (one read each; one that vanished since the listing is skipped)."""
        for request_id in self.backend.list_ids():
            found = self.backend.read(request_id)
            if found:
                yield found

    def due_soon(self, *, within_seconds: float) -> list[tuple[dict[str, Any], str]]:
        """Unfinished documents whose ``dueBy`` is at most ``within_seconds`` away (or past) and that were not
        reminded yet."""
        now = self.clock()
        out = []
        for doc, etag in self._documents():
            if (
                doc.get("status") in FINAL
                or doc.get("dueSoonNotifiedAt")
                or doc.get("parent")
                or not isinstance(doc.get("dueBy"), str)
            ):
                continue
            due = parse_rfc3339(doc["dueBy"])
            if due is not None and due.timestamp() - now <= within_seconds:
                out.append((doc, etag))
        return out

    def modify(
        self, request_id: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]
    ) -> tuple[dict[str, Any], bool] | None:
        """Read-change-write under the document's ETag, again from a fresh read on a conflict, without
        owning it (children record their results in their parent's document this way). ``change`` returns
        the fields to set, or None to leave the document as it is. Returns (document, changed); None when
        there is no document."""
        for _ in range(50):
            found = self.backend.read(request_id)
            if found is None:
                return None
            doc, etag = found
            changes = change(doc)
            if changes is None:
                return doc, False
            new = {**doc, **changes, "updatedAt": self._stamp()}
            try:
                self.backend.replace(request_id, new, etag)
            except StateConflict:
                continue
            return new, True
        raise RetryableError("the request state kept changing under us", code="state_contention")

    def change_if_unchanged(self, doc: dict[str, Any], etag: str, **changes: Any) -> bool:
        """Change a document read by ``stale`` unless someone changed it since (the watchdog's writes)."""
        try:
            self.backend.replace(doc["requestId"], {**doc, **changes, "updatedAt": self._stamp()}, etag)
        except StateConflict:
            return False
        return True

    def stale(self, *, idle_seconds: float) -> list[tuple[dict[str, Any], str]]:
        """in_progress documents whose lease lapsed and that saw no activity for ``idle_seconds``."""
        now = self.clock()
        out = []
        for doc, etag in self._documents():
            if doc.get("status") in FINAL or float(doc.get("leaseUntil") or 0) > now:
                continue
            updated = calendar.timegm(time.strptime(doc["updatedAt"], "%Y-%m-%dT%H:%M:%SZ"))
            if now - updated >= idle_seconds:
                out.append((doc, etag))
        return out


class CancelWatch:
    """``cancel_requested()`` for the worker's checkpoints: true once the request's state carries the cancel
    mark. It looks at the owned document (refreshed by every lease renewal and checkpoint save) and, at most
    every ``interval`` seconds, reads the request's state itself (for a fan-out child: its request's, where a
    cancel is written), so any instance notices within one interval."""

    def __init__(
        self,
        store: StateStore,
        claim: Claim,
        *,
        interval: float,
        request_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.claim = claim
        self.request_id = request_id or claim.document["requestId"]  # a workspace's child watches its request
        self.interval = interval
        self.clock = clock
        self._seen = bool(claim.document.get("cancelRequested"))
        self._last = clock() - interval  # the first call looks
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            if self._seen or self.claim.document.get("cancelRequested"):
                self._seen = True
                return True
            if self.clock() - self._last < self.interval:
                return False
            self._last = self.clock()
            try:
                found = self.store.read(self.request_id)
            except Exception as exc:  # noqa: BLE001 - a failed look is repeated at the next checkpoint
                log.warning("could not read the request state for a cancel", extra={"error": type(exc).__name__})
                return False
            self._seen = bool(found and found[0].get("cancelRequested"))
            return self._seen


class LeaseKeeper:
    """Renews the lease in the background while work goes on; flags a lost lease so the work stops."""

    def __init__(self, store: StateStore, claim: Claim) -> None:
        self.store = store
        self.claim = claim
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dsr-lease", daemon=True)

    def _run(self) -> None:
        interval = max(1.0, self.store.lease_seconds / 3)
        while not self._stop.wait(interval):
            try:
                self.store.renew(self.claim)
            except LeaseLost:
                self.lost.set()
                return
            except Exception as exc:  # noqa: BLE001 - a failed renewal is retried at the next tick
                log.warning("lease renewal failed", extra={"error": type(exc).__name__})

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
