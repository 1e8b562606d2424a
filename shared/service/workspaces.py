"""One workspace's part of a request, and the one outcome (and, for an export, the one manifest) made of parts.

``run_part`` runs a request narrowed to one workspace (``DsrRequest.for_workspace``): an export's traversal
writes that workspace's ``.jsonl`` files under the request's prefix but no manifest; a delete plans, deletes
and verifies. Its result is outcome-shaped (``{"data": {...}}``) so that it can be stored as the final
state of a child. ``finish`` merges the parts of every workspace into the request's single outcome with
``data.workspaces`` (contract 6.2); the single-process path and the fan-out path both end there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from shared.domain.contract import DsrRequest
from shared.domain.outcome import error_entry, outcome_event, utc_now
from shared.service.bundle import bundle_prefix, manifest_name
from shared.service.delete import PLAN_LIMIT_IN_EVENT, audit_location, run_delete
from shared.service.export import ExportResult, ExportTraversal
from shared.service.listing import Endpoints
from shared.service.report import READABLE_STATUSES, write_readable_export

log = logging.getLogger("dsr.workspaces")

TRANSIENT_CODES = frozenset({"transient_error", "throttled", "connection_failed", "bad_json"})


def azure_ml_unavailable(data: dict[str, Any]) -> bool:
    """A failed part whose every error is transient: Azure ML answered nothing, try again later."""
    errors = data.get("errors") or []
    return data.get("status") == "failed" and bool(errors) and all(e.get("code") in TRANSIENT_CODES for e in errors)


# -- one workspace ---------------------------------------------------------------------------------------


def export_traversal(
    request: DsrRequest,
    services: Any,
    *,
    checkpoint: Any = None,
    save: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ExportResult:
    settings = services.settings
    resume = checkpoint.get("export") if isinstance(checkpoint, dict) else None
    traversal = ExportTraversal(
        request,
        catalog=services.catalog,
        endpoints=Endpoints(settings.endpoints),
        aml=services.aml(),
        store=services.bundles(),
        concurrency=settings.concurrency,
        checkpoint=resume,
        checkpoint_seconds=settings.checkpoint_seconds,
        on_checkpoint=(lambda snap: save({"export": snap})) if save else None,
        should_stop=should_stop,
    )
    return traversal.run()


def export_part_data(request: DsrRequest, result: ExportResult) -> dict[str, Any]:
    """What an export of some workspaces found: the parts of the manifest and the outcome."""
    succeeded = [t for t in result.targets if t.ok]
    data: dict[str, Any] = {
        "counts": {t.target.resource_id: {k: t.counts.get(k, 0) for k in request.kinds} for t in succeeded},
        "errors": [e.as_dict() for e in result.errors],
        "files": [f.as_dict() for f in result.files],
        "skipped": {t.target.resource_id: t.skipped for t in result.targets if t.skipped},
        "secretsRedacted": sum(t.secrets_scrubbed for t in result.targets),
        "nonFiniteNulled": sum(t.non_finite for t in result.targets),
        "calls": result.calls,
    }
    if request.scope == "subject":
        data["subjectMatches"] = {t.target.resource_id: t.matches for t in succeeded}
    data["status"] = "failed" if not succeeded else ("partially_completed" if data["errors"] else "completed")
    return data


def run_part(
    request: DsrRequest,
    services: Any,
    started_at: str,
    *,
    checkpoint: Any = None,
    save: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    cancel_requested: Callable[[], bool] | None = None,
) -> dict[str, Any] | None:
    """One workspace (``request`` narrowed by ``for_workspace``); None when it stopped at a checkpoint. A
    cancelled part has status ``cancelled`` (an export's: nothing; a delete's: what it did before it stopped)."""
    cancelled = cancel_requested or (lambda: False)
    if request.operation == "export":
        result = None
        if not cancelled():
            result = export_traversal(
                request,
                services,
                checkpoint=checkpoint,
                save=save,
                should_stop=lambda: bool(should_stop and should_stop()) or cancelled(),
            )
        if result is None or (result.suspended and cancelled()):
            return {"data": {"status": "cancelled", "counts": {}, "errors": []}}
        if result.suspended:
            return None
        return {"data": export_part_data(request, result)}
    event = run_delete(request, services, started_at, checkpoint=checkpoint, save=save, cancel_requested=cancelled)
    return {"data": event["data"]}


def failed_part(code: str, message: str, workspace: str) -> dict[str, Any]:
    """The part of a workspace that could not be run to its end (its child kept failing, or stalled)."""
    return {
        "data": {
            "status": "failed",
            "counts": {},
            "errors": [error_entry(code, message, kind="workspace", target=workspace)],
        }
    }


# -- the request's one outcome ---------------------------------------------------------------------------


def workspace_entry(operation: str, workspace: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data.workspaces[i]`` of contract 6.2 for one workspace, from a part (or any outcome's data)."""
    counts = (data.get("counts") or {}).get(workspace)
    errors = [e for e in data.get("errors") or [] if e.get("target") in (workspace, None)]
    if counts is None:
        status = "failed"
    elif not errors:
        status = "completed"
    elif (
        operation == "delete"
        and not data.get("dryRun")
        and sum(c.get("planned", 0) for c in counts.values()) > 0
        and sum(c.get("verified", 0) for c in counts.values()) == 0
    ):
        status = "failed"
    else:
        status = "partially_completed"
    return {"workspace": workspace, "status": status, "counts": counts or {}, "errors": errors}


def request_status(entries: list[dict[str, Any]], request_errors: list[dict[str, Any]]) -> str:
    """Contract 6.2: completed when every workspace completed; failed when every one failed (or none was
    found and the search itself failed); otherwise partially completed."""
    if not entries:
        return "failed" if request_errors else "completed"
    if all(e["status"] == "failed" for e in entries):
        return "failed"
    if all(e["status"] == "completed" for e in entries) and not request_errors:
        return "completed"
    return "partially_completed"


def with_workspaces(event: dict[str, Any], request: DsrRequest) -> dict[str, Any]:
    """Add ``data.workspaces`` to an outcome made in one piece (a single target)."""
    data = event["data"]
    data["workspaces"] = [workspace_entry(request.operation, t.resource_id, data) for t in request.targets]
    return event


def finish(
    request: DsrRequest,
    services: Any,
    started_at: str,
    parts: list[tuple[str, dict[str, Any]]],
    *,
    discovered: int | None = None,
    request_errors: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The request's one outcome from the parts ``(workspace ARM id, part data)``, in workspace order;
    an export's manifest is written here, last."""
    extra = list(request_errors or [])
    entries = [workspace_entry(request.operation, rid, data) for rid, data in parts]
    status = request_status(entries, extra)
    errors = extra + [e for _, data in parts for e in data.get("errors") or []]
    counts: dict[str, Any] = {}
    for _, data in parts:
        counts.update(data.get("counts") or {})
    common: dict[str, Any] = {"workspaces": entries, **({"discovered": discovered} if discovered is not None else {})}
    if request.operation == "export":
        return _finish_export(request, services, started_at, parts, status, errors, counts, common)
    return _finish_delete(request, services, started_at, parts, status, errors, counts, common)


def _finish_export(
    request: DsrRequest,
    services: Any,
    started_at: str,
    parts: list[tuple[str, dict[str, Any]]],
    status: str,
    errors: list[dict[str, Any]],
    counts: dict[str, Any],
    common: dict[str, Any],
) -> dict[str, Any]:
    settings = services.settings
    manifest = manifest_name(request.requestId)
    subject: dict[str, Any] = {}
    if request.scope == "subject":
        matches: dict[str, Any] = {}
        for _, data in parts:
            matches.update(data.get("subjectMatches") or {})
        subject = {"scope": "subject", "subjectMatches": matches}
    skipped: dict[str, Any] = {}
    for _, data in parts:
        skipped.update(data.get("skipped") or {})
    files = [f for _, data in parts for f in data.get("files") or []]
    calls = sum(int(data.get("calls") or 0) for _, data in parts)
    completed_at = utc_now()
    clock = time.monotonic()
    document: dict[str, Any] = {
        "schemaVersion": "1",
        "requestId": request.requestId,
        "request": request.model_dump(mode="json"),
        "status": status,
        "errors": errors,
        "startedAt": started_at,
        "completedAt": completed_at,
        "container": settings.export_container,
        "files": files,
        "counts": counts,
        "skipped": skipped,
        "secretsRedacted": sum(int(data.get("secretsRedacted") or 0) for _, data in parts),
        "nonFiniteNulled": sum(int(data.get("nonFiniteNulled") or 0) for _, data in parts),
        **subject,
        "calls": calls,
        **common,
    }
    # the readable page and the zip (which holds the manifest too) come first: the manifest is written last
    store = services.bundles()
    readable = write_readable_export(store, document, settings) if status in READABLE_STATUSES else {}
    store.put_json(manifest, document)
    log.info("export written", extra={"files": len(files), "calls": calls, "seconds": round(time.monotonic() - clock, 3)})
    return outcome_event(
        request.requestId,
        "export",
        status,
        {
            "counts": counts,
            "bundle": {
                "container": settings.export_container,
                "prefix": bundle_prefix(request.requestId),
                "manifest": manifest,
                **readable,
            },
            "errors": errors,
            "startedAt": started_at,
            "completedAt": completed_at,
            **subject,
            **common,
        },
    )


def _finish_delete(
    request: DsrRequest,
    services: Any,
    started_at: str,
    parts: list[tuple[str, dict[str, Any]]],
    status: str,
    errors: list[dict[str, Any]],
    counts: dict[str, Any],
    common: dict[str, Any],
) -> dict[str, Any]:
    listing_name = "plan" if request.dryRun else "items"
    listing = [item for _, data in parts for item in data.get(listing_name) or []]
    data: dict[str, Any] = {
        "dryRun": request.dryRun,
        "counts": counts,
        "errors": errors,
        "startedAt": started_at,
        "completedAt": utc_now(),
        "audit": audit_location(services.settings, request.requestId),
        listing_name: listing[:PLAN_LIMIT_IN_EVENT],
    }
    if len(listing) > PLAN_LIMIT_IN_EVENT or any(part.get("itemsTruncated") for _, part in parts):
        data["itemsTruncated"] = True
    if request.scope == "subject":
        totals = {"scanned": 0, "identity": 0, "mentionOnly": 0}
        for _, part in parts:
            for name in totals:
                totals[name] += int((part.get("subjectMatches") or {}).get(name) or 0)
        data["scope"] = "subject"
        data["subjectMatches"] = totals
        data["review"] = [r for _, part in parts for r in part.get("review") or []][:PLAN_LIMIT_IN_EVENT]
    return outcome_event(request.requestId, "delete", status, {**data, **common})
