"""The watchdog: requests left ``in_progress`` by a worker that vanished (lease lapsed, no activity) are
put back on the request queue a bounded number of times, then marked ``failed`` with an outcome, so no
request is ever stuck without anyone knowing. It also sends one ``aml.dsr.request.due_soon`` event per
unfinished request that is within 72 hours of its ``dueBy``.

Fanned-out requests (``shared.service.fanout``): each workspace's child is watched like a request (re-sent,
then recorded as a failed workspace, which may finish the request); the parent itself only when a child
never started or every workspace is recorded but the outcome was not made."""

from __future__ import annotations

import logging
from typing import Any

from shared.domain.contract import DsrRequest
from shared.domain.outcome import due_soon_event, failed_event, utc_now
from shared.logs import request_context
from shared.ports import RequestSender
from shared.service import fanout
from shared.service.processor import publish
from shared.service.state import StateStore
from shared.service.workspaces import failed_part, workspace_entry

log = logging.getLogger("dsr.watchdog")
DUE_SOON_SECONDS = 72 * 3600


def notify_due_soon(services: Any) -> int:
    """Publish the due-soon event of each unfinished request near its deadline, once: the mark is written
    (ETag-safe) before the event goes out, so two sweeps never both send it; a failed publish removes the
    mark again so the next sweep retries (the event id ``<requestId>:due_soon`` lets duplicate detection drop
    a repeat)."""
    store = services.state()
    sent = 0
    for doc, etag in store.due_soon(within_seconds=DUE_SOON_SECONDS):
        request_id = doc["requestId"]
        with request_context(request_id):
            if not store.change_if_unchanged(doc, etag, dueSoonNotifiedAt=utc_now()):
                continue  # changed meanwhile: looked at again by the next sweep
            status = "cancelling" if doc.get("cancelRequested") else str(doc.get("status"))
            try:
                publish(due_soon_event(request_id, doc.get("operation"), due_by=doc["dueBy"], status=status), services)
            except Exception:
                found = store.read(request_id)
                if found is not None:
                    store.change_if_unchanged(found[0], found[1], dueSoonNotifiedAt=None)
                raise
            log.warning("request due soon: reminder published", extra={"dueBy": doc["dueBy"]})
            sent += 1
    return sent


def sweep(services: Any, sender: RequestSender) -> dict[str, int]:
    """One pass over the state store; returns how many requests were re-enqueued and failed."""
    settings = services.settings
    store = services.state()
    tally = {"requeued": 0, "failed": 0}
    for doc, etag in store.stale(idle_seconds=settings.watchdog_idle_seconds):
        if doc.get("parent"):
            with request_context(str(doc["parent"])):
                _sweep_child(doc, etag, services, store, sender, tally)
            continue
        request_id = doc["requestId"]
        if _children_watched(doc, store):
            continue
        with request_context(request_id):
            requeues = int(doc.get("requeues") or 0)
            if requeues < settings.watchdog_max_requeues:
                if not store.change_if_unchanged(doc, etag, requeues=requeues + 1):
                    continue  # a worker picked it up meanwhile
                sender.send_request(
                    doc["request"], message_id=f"{request_id}:requeue:{requeues + 1}", properties={"dsrRequeue": requeues + 1}
                )
                log.warning("stalled request re-enqueued", extra={"requeue": requeues + 1})
                tally["requeued"] += 1
                continue
            event = failed_event(
                request_id,
                doc.get("operation"),
                "stalled",
                f"the request made no progress after {requeues} re-enqueues; see the logs of its "
                "workers, then send it again with a new requestId",
                started_at=doc.get("startedAt") or doc.get("createdAt"),
            )
            if not store.change_if_unchanged(
                doc, etag, status="failed", outcome=event, owner=None, leaseUntil=0.0, checkpoint=None
            ):
                continue
            publish(event, services)
            log.error("stalled request marked failed", extra={"requeues": requeues})
            tally["failed"] += 1
    return tally


def _children_watched(doc: dict[str, Any], store: StateStore) -> bool:
    """A fanned-out parent waits for its children, each watched on its own: nothing to do for it unless a
    child never started (no document) or all are recorded and no outcome was made (its maker died)."""
    fleet = doc.get("fleet")
    if not isinstance(fleet, dict) or not fleet.get("dispatches"):
        return False
    pending = [i for i in range(len(fleet["workspaces"])) if str(i) not in fleet["results"]]
    return bool(pending) and all(store.read(fanout.child_id(doc["requestId"], i)) is not None for i in pending)


def _sweep_child(
    doc: dict[str, Any], etag: str, services: Any, store: StateStore, sender: RequestSender, tally: dict[str, int]
) -> None:
    settings = services.settings
    requeues = int(doc.get("requeues") or 0)
    index = int(doc["index"])
    if requeues < settings.watchdog_max_requeues:
        if not store.change_if_unchanged(doc, etag, requeues=requeues + 1):
            return
        sender.send_request(
            doc["request"],
            message_id=f"{doc['requestId']}:requeue:{requeues + 1}",
            properties={fanout.WORKSPACE: index, "dsrRequeue": requeues + 1},
        )
        log.warning("stalled workspace re-enqueued", extra={"index": index, "requeue": requeues + 1})
        tally["requeued"] += 1
        return
    part = failed_part(
        "stalled",
        f"the workspace made no progress after {requeues} re-enqueues; see the logs of its workers",
        str(doc.get("workspace")),
    )
    if not store.change_if_unchanged(doc, etag, status="failed", outcome=part, owner=None, leaseUntil=0.0, checkpoint=None):
        return
    request = DsrRequest.model_validate(doc["request"])
    fanout.record_result(store, request, index, workspace_entry(request.operation, str(doc.get("workspace")), part["data"]))
    log.error("stalled workspace recorded as failed", extra={"index": index, "requeues": requeues})
    tally["failed"] += 1
    event = fanout.finalize(request, services)
    if event is not None:
        publish(event, services)
        fanout.mark_published(store, request.requestId)
