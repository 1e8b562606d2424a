"""The outcome event (docs/contract.md §2): a CloudEvents 1.0 structured event. Pure."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from shared.domain.errors import RequestRejected

SOURCE = "/aml-dsr"
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"
# A request's final status: what its outcome event says and what its state keeps.
FinalStatus = Literal["completed", "partially_completed", "failed", "rejected", "cancelled"]
STATUSES: tuple[FinalStatus, ...] = get_args(FinalStatus)
EXIT_CODES: dict[FinalStatus, int] = {"completed": 0, "partially_completed": 3, "failed": 1, "rejected": 2, "cancelled": 4}
# Service Bus Standard takes messages up to 256 KiB (headers included): an outcome stays well under it
MAX_OUTCOME_BYTES = 192 * 1024
CUTTABLE_LISTS = ("items", "plan", "review", "errors")


def error_entry(code: str, message: str, *, kind: str | None, target: str | None, **extra: Any) -> dict[str, Any]:
    """One entry of an outcome's ``data.errors`` (docs/contract.md §2): a stable code, a message in our words, and
    the kind and target it concerns (``None`` when it concerns the whole request); a delete's item adds its id."""
    return {"code": code, "message": message, "kind": kind, "target": target, **extra}


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def outcome_event(
    request_id: str, operation: str | None, status: str, data: dict[str, Any], *, time: str | None = None
) -> dict[str, Any]:
    assert status in STATUSES
    type_op = operation if operation in ("export", "delete") else "request"
    return {
        "specversion": "1.0",
        "id": f"{request_id}:{status}",
        "source": SOURCE,
        "type": f"aml.dsr.{type_op}.{status}",
        "subject": f"requests/{request_id}",
        "time": time or utc_now(),
        "datacontenttype": "application/json",
        "data": {"requestId": request_id, "operation": operation, "status": status, **data},
    }


def due_soon_event(request_id: str, operation: str | None, *, due_by: str, status: str) -> dict[str, Any]:
    """The one reminder that an unfinished request is close to its deadline (not an outcome: the request goes on)."""
    return {
        "specversion": "1.0",
        "id": f"{request_id}:due_soon",
        "source": SOURCE,
        "type": "aml.dsr.request.due_soon",
        "subject": f"requests/{request_id}",
        "time": utc_now(),
        "datacontenttype": "application/json",
        "data": {"requestId": request_id, "operation": operation, "status": status, "dueBy": due_by},
    }


def unreadable_id(body: bytes | str) -> str:
    """The stand-in requestId of a message whose own could not be read: stable for the same bytes."""
    raw = body.encode("utf-8", "replace") if isinstance(body, str) else bytes(body)
    return f"unreadable-{hashlib.sha256(raw).hexdigest()[:16]}"


def failed_event(
    request_id: str, operation: str | None, code: str, message: str, *, started_at: str | None = None
) -> dict[str, Any]:
    """The one ``failed`` outcome of a request that could not run to its end (one coded error)."""
    now = utc_now()
    return outcome_event(
        request_id,
        operation,
        "failed",
        {
            "counts": {},
            "errors": [error_entry(code, message, kind=None, target=None)],
            "startedAt": started_at or now,
            "completedAt": now,
        },
    )


def rejected_event(error: RequestRejected, body: bytes | str, *, started_at: str) -> dict[str, Any]:
    """A rejection names each broken rule. Without a readable requestId, one is derived from the body."""
    request_id = error.request_id or unreadable_id(body)
    return outcome_event(
        request_id,
        error.operation,
        "rejected",
        {
            "counts": {},
            "errors": [v.as_dict() for v in error.violations],
            "startedAt": started_at,
            "completedAt": utc_now(),
        },
    )


def event_size(event: dict[str, Any]) -> int:
    return len(json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def cap_outcome(event: dict[str, Any], limit: int = MAX_OUTCOME_BYTES) -> tuple[dict[str, Any], bool]:
    """The event cut to ``limit`` bytes, and whether it was cut. The longest of the cuttable lists
    (``items``, ``plan``, ``review``, ``errors``) is halved until the event fits; ``data.truncated`` then
    says, per list, how many entries are listed out of how many, and where the full list is (the audit blob
    of a delete, the manifest of an export); ``itemsTruncated`` is set too."""
    if event_size(event) <= limit:
        return event, False
    data = dict(event["data"])
    totals = {k: len(data[k]) for k in CUTTABLE_LISTS if isinstance(data.get(k), list)}
    truncated: dict[str, Any] = dict(data.get("truncated") or {})
    where = data.get("audit") or (data.get("bundle") or {}).get("manifest")
    capped = {**event, "data": data}
    while event_size(capped) > limit:
        longest = max(totals, key=lambda k: len(data[k]), default=None)
        if longest is None or not data[longest]:
            break  # nothing left to cut: counts and the rest are small by construction
        data[longest] = data[longest][: len(data[longest]) // 2]
        total = max(totals[longest], int(truncated.get(longest, {}).get("total", 0)))
        truncated[longest] = {"listed": len(data[longest]), "total": total, "fullListIn": where}
        data["truncated"] = truncated
        data["itemsTruncated"] = True
    return capped, True
