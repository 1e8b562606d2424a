"""Cancelled requests: what is left behind, and the ``cancelled`` outcome (docs/contract.md §6.4).

An export stopped by a cancel leaves no manifest and no file: everything under its prefix is deleted, so
nothing half-written can be trusted by mistake. A delete stops sending DELETEs at its next item; what it
already did stays in the audit log (``shared.service.delete`` writes a CANCEL line with the tally).
"""

from __future__ import annotations

import logging
from typing import Any

from shared.domain.outcome import outcome_event, utc_now
from shared.ports import BundleStore
from shared.service.bundle import bundle_prefix

log = logging.getLogger("dsr.cancel")


def discard_export(store: BundleStore, request_id: str) -> int:
    """Delete every blob of the request's bundle (the manifest first); how many there were."""
    names = sorted(store.list_names(bundle_prefix(request_id)), key=lambda n: not n.endswith("/manifest.json"))
    for name in names:
        store.delete(name)
    return len(names)


def cancelled_export(request_id: str, store: BundleStore, *, started_at: str, state: dict[str, Any]) -> dict[str, Any]:
    discarded = discard_export(store, request_id)
    log.info("export cancelled: its partial bundle was deleted", extra={"files": discarded})
    return outcome_event(
        request_id,
        "export",
        "cancelled",
        {
            "counts": {},
            "errors": [],
            "startedAt": started_at,
            "completedAt": utc_now(),
            "cancelRequestedAt": state.get("cancelRequestedAt"),
            "discardedFiles": discarded,
        },
    )


def recast_cancelled(event: dict[str, Any]) -> dict[str, Any]:
    """The same outcome (a fan-out delete's merged parts: what each workspace did before it stopped) as the
    request's ``cancelled`` outcome."""
    data = {k: v for k, v in event["data"].items() if k not in ("requestId", "operation", "status")}
    return outcome_event(event["data"]["requestId"], event["data"]["operation"], "cancelled", data)
