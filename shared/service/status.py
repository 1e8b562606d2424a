"""Following a request (docs/contract.md §6.4): its status from ONE state read, and its cancel.

The answer holds what a ticket needs and nothing more: no request body (it may name the subject), no
checkpoint, no owner or lease token; per workspace only the status and the counts; the outcome once final.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from shared.domain.contract import REQUEST_ID, Target
from shared.ports import BundleStore
from shared.service.state import FINAL, StateStore, is_tombstone
from shared.service.workspaces import workspace_entry

_REQUEST_ID = re.compile(REQUEST_ID)


def valid_request_id(request_id: Any) -> bool:
    """The same rule as the request's ``requestId`` (1-64 characters, letters, digits, ``._-``)."""
    return isinstance(request_id, str) and 1 <= len(request_id) <= 64 and _REQUEST_ID.fullmatch(request_id) is not None


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _status_of(doc: dict[str, Any], now: float) -> str:
    status = str(doc.get("status") or "in_progress")
    if status in FINAL:
        return status
    if doc.get("cancelRequested"):
        return "cancelling"
    if doc.get("owner") is not None and float(doc.get("leaseUntil") or 0) > now:
        return "in_progress"
    return "queued"  # waiting on the queue: a continuation, a redelivery or a re-enqueue will pick it up


def _resource_ids(request: Any) -> list[str]:
    out = []
    for raw in (request or {}).get("targets") or [] if isinstance(request, dict) else []:
        try:
            out.append(Target.model_validate(raw).resource_id)
        except ValueError:
            continue
    return out


def _running_workspaces(doc: dict[str, Any], status: str) -> dict[str, dict[str, Any]]:
    """Per workspace, the progress the last checkpoint recorded (counts so far)."""
    found: dict[str, dict[str, Any]] = {
        rid: {"workspace": rid, "status": status, "counts": {}} for rid in _resource_ids(doc.get("request"))
    }
    fleet = doc.get("fleet")
    if isinstance(fleet, dict) and isinstance(fleet.get("workspaces"), list):  # fanned out: the results recorded so far
        raw_results = fleet.get("results")
        results: dict[str, Any] = raw_results if isinstance(raw_results, dict) else {}
        for index, entry in enumerate(fleet["workspaces"]):
            rid = str(entry.get("workspace")) if isinstance(entry, dict) else str(index)
            done = results.get(str(index))
            if isinstance(done, dict):
                found[rid] = {"workspace": rid, "status": done.get("status"), "counts": done.get("counts") or {}}
            else:
                found[rid] = {"workspace": rid, "status": "in_progress", "counts": {}}
    checkpoint = doc.get("checkpoint")
    if not isinstance(checkpoint, dict):
        return found
    export = checkpoint.get("export")
    if isinstance(export, dict) and isinstance(export.get("targets"), dict):
        for rid, raw in export["targets"].items():
            if isinstance(raw, dict):
                counts = raw.get("counts") if isinstance(raw.get("counts"), dict) else {}
                found[rid] = {"workspace": rid, "status": status if raw.get("ok", True) else "failed", "counts": counts}
    delete = checkpoint.get("delete")
    if isinstance(delete, dict) and isinstance(delete.get("items"), list):
        for item in delete["items"]:
            if not isinstance(item, dict) or not isinstance(item.get("target"), dict):
                continue
            try:
                rid = Target.model_validate(item["target"]).resource_id
            except ValueError:
                continue
            entry = found.setdefault(rid, {"workspace": rid, "status": status, "counts": {}})
            tally = entry["counts"].setdefault(str(item.get("kind")), {"planned": 0, "deleted": 0, "absent": 0, "failed": 0})
            tally["planned"] += 1
            if item.get("result") in ("deleted", "absent", "failed"):
                tally[str(item["result"])] += 1
    return found


def _final_workspaces(doc: dict[str, Any], outcome: dict[str, Any]) -> list[dict[str, Any]]:
    data = outcome.get("data") or {}
    if isinstance(data.get("workspaces"), list):  # multi-workspace outcomes carry their own list
        return [{k: w.get(k) for k in ("workspace", "status", "counts")} for w in data["workspaces"] if isinstance(w, dict)]
    status = data.get("status")
    raw_counts = data.get("counts")
    counts: dict[str, Any] = raw_counts if isinstance(raw_counts, dict) else {}
    operation = str(data.get("operation") or doc.get("operation") or "")
    out = []
    for rid in dict.fromkeys([*_resource_ids(doc.get("request")), *counts]):
        entry = workspace_entry(operation, rid, {**data, "counts": counts})  # the outcome's own rule
        out.append(
            {
                "workspace": rid,
                "status": status if status in ("cancelled", "rejected") else entry["status"],
                "counts": entry["counts"],
            }
        )
    return out


def status_view(doc: dict[str, Any], now: float) -> dict[str, Any]:
    status = _status_of(doc, now)
    outcome = doc.get("outcome") if status in FINAL else None
    if isinstance(outcome, dict):
        workspaces = _final_workspaces(doc, outcome)
    else:
        workspaces = list(_running_workspaces(doc, "queued" if status == "queued" else "in_progress").values())
    return {
        "requestId": doc.get("requestId"),
        "operation": doc.get("operation"),
        "status": status,
        "dueBy": doc.get("dueBy"),
        "receivedAt": doc.get("receivedAt") or (None if is_tombstone(doc) else doc.get("createdAt")),
        "updatedAt": doc.get("updatedAt"),
        "workspaces": workspaces,
        "outcome": outcome,
    }


def request_status(store: StateStore, request_id: str, *, clock: Callable[[], float] = time.time) -> tuple[int, dict[str, Any]]:
    """(HTTP status, answer): 200 with the view, 404 ``not_found``, 400 for an id that cannot be one."""
    if not valid_request_id(request_id):
        return 400, error_body("invalid_format", "requestId: 1-64 characters: letters, digits, '.', '_', '-'", field="requestId")
    found = store.read(request_id)
    if found is None:
        return 404, error_body("not_found", "no request with this requestId")
    return 200, status_view(found[0], clock())


def cancel_request(store: StateStore, request_id: str, *, clock: Callable[[], float] = time.time) -> tuple[int, dict[str, Any]]:
    """(HTTP status, answer): 202 accepted (also when asked again), 409 ``conflict`` when already final."""
    if not valid_request_id(request_id):
        return 400, error_body("invalid_format", "requestId: 1-64 characters: letters, digits, '.', '_', '-'", field="requestId")
    verdict, doc = store.request_cancel(request_id)
    view = status_view(doc, clock())
    if verdict == "conflict":
        return 409, error_body("conflict", f"the request is already {view['status']}: nothing was changed", status=view["status"])
    return 202, {"requestId": request_id, "status": view["status"], "cancelRequestedAt": doc.get("cancelRequestedAt")}


def fresh_link(store: StateStore, bundles: BundleStore, request_id: str, *, hours: int) -> tuple[int, dict[str, Any]]:
    """A new read-only download URL of a finished export's zip (the one in the outcome may have expired)."""
    if not valid_request_id(request_id):
        return 400, error_body("invalid_format", "requestId: 1-64 characters: letters, digits, '.', '_', '-'", field="requestId")
    found = store.read(request_id)
    outcome = found[0].get("outcome") if found else None
    bundle = (outcome.get("data") or {}).get("bundle") if isinstance(outcome, dict) else None
    archive = bundle.get("zip") if isinstance(bundle, dict) else None
    if not isinstance(archive, str):
        return 404, error_body("not_found", "no finished export with a zip has this requestId")
    url, expires_at = bundles.download_url(archive, hours=hours)
    return 200, {"requestId": request_id, "zip": archive, "download": {"url": url, "expiresAt": expires_at}}
