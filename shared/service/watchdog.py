"""The watchdog: requests left ``in_progress`` by a worker that vanished (lease lapsed, no activity) are
put back on the request queue a bounded number of times, then marked ``failed`` with an outcome, so no
request is ever stuck without anyone knowing."""

from __future__ import annotations

import logging
from typing import Any

from shared.domain.outcome import failed_event
from shared.logs import request_context
from shared.ports import RequestSender
from shared.service.processor import publish

log = logging.getLogger("dsr.watchdog")


def sweep(services: Any, sender: RequestSender) -> dict[str, int]:
    """One pass over the state store; returns how many requests were re-enqueued and failed."""
    settings = services.settings
    store = services.state()
    tally = {"requeued": 0, "failed": 0}
    for doc, etag in store.stale(idle_seconds=settings.watchdog_idle_seconds):
        request_id = doc["requestId"]
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
