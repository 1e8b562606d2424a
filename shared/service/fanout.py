"""Fan-out and fan-in of a request over many workspaces (contract 6.2): discovered, or more than one target.

The parent (the request's own state document) records the list of workspaces first — found with Resource
Graph, or its targets — so that a redelivery never works on a different list. Each workspace is then a
*child*: the same request message with the application property ``dsrWorkspace`` = its index, on the
request queue, taken by whichever Function instance is free (``dispatch``), or run on a local thread pool by
the CLI (``run_here``). A child has its own state document ``<requestId>:ws:<n>`` — lease, checkpoints,
continuations and watchdog exactly as a request has — and is never visible as an outcome of its own.

Fan-in: a finished child records its workspace's entry in the parent's ``fleet.results`` (a read-change-
write under the parent's ETag). Whoever sees every result recorded takes the short ``finalizing`` lease on
the parent (ETag again: of two children finishing together exactly one gets it), merges the parts stored in
the child documents into the one outcome (writing the one manifest, last), and closes the parent with it;
only the writer of that close publishes. A child that keeps failing is recorded as a failed workspace on
its last delivery (or by the watchdog), so the request still ends.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from shared.domain.contract import DsrRequest, Target
from shared.domain.errors import RetryableError
from shared.ports import RequestSender
from shared.service.bundle import manifest_name
from shared.service.cancel import cancelled_export, recast_cancelled
from shared.service.discovery import ResourceGraph
from shared.service.failures import describe_failure
from shared.service.state import FINAL, CancelWatch, Claim, LeaseKeeper, LeaseLost, RequestBusy, StateStore
from shared.service.workspaces import azure_ml_unavailable, failed_part, finish, run_part, workspace_entry

log = logging.getLogger("dsr.fanout")

WORKSPACE = "dsrWorkspace"  # application property of a child message: the workspace's index in the fleet


def child_id(request_id: str, index: int) -> str:
    return f"{request_id}:ws:{index}"


def child_message_id(request_id: str, index: int, dispatch: int) -> str:
    base = child_id(request_id, index)
    return base if dispatch <= 1 else f"{base}:d{dispatch}"


def child_index(properties: Any) -> int | None:
    """The workspace index of a child message (None: not a child, or an unreadable one)."""
    raw = properties.get(WORKSPACE) if hasattr(properties, "get") else None
    if raw is None:
        return None
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    try:
        index = int(raw)
    except (TypeError, ValueError):
        return -1
    return index if index >= 0 else -1


# -- the parent --------------------------------------------------------------------------------------------


def record_fleet(request: DsrRequest, services: Any, store: StateStore, claim: Claim) -> dict[str, Any]:
    """The workspaces of the request, recorded in its state before any work (kept on a redelivery)."""
    fleet = claim.document.get("fleet")
    if isinstance(fleet, dict):
        return fleet
    discovered: int | None = None
    errors: list[dict[str, Any]] = []
    if request.discover is not None:
        found = ResourceGraph(services.aml(), services.settings.resource_graph_base).find(request.discover)
        workspaces = [w.as_json() for w in found.workspaces]
        discovered, errors = len(workspaces), found.errors
        if not workspaces and errors and all(e["code"] == "discovery_failed" for e in errors):
            log.warning("no workspace could be searched", extra={"errors": len(errors)})
    else:
        workspaces = [{"workspace": t.resource_id, "kind": None, "target": t.model_dump(mode="json")} for t in request.targets]
    if request.operation == "export":
        services.bundles().delete(manifest_name(request.requestId))  # never trusted while files are rewritten
    fleet = {"version": 1, "workspaces": workspaces, "discovered": discovered, "errors": errors, "results": {}, "dispatches": 0}
    store.update(claim, fleet=fleet)
    log.info("workspaces recorded", extra={"workspaces": len(workspaces), "discovered": discovered is not None})
    return fleet


def _pending(fleet: dict[str, Any]) -> list[int]:
    return [i for i in range(len(fleet["workspaces"])) if str(i) not in fleet["results"]]


def dispatch(request: DsrRequest, services: Any, store: StateStore, claim: Claim, sender: RequestSender) -> dict[str, Any] | None:
    """Put one child message per unfinished workspace on the request queue; the parent's lease is released
    first (from now on children write into it). Returns the outcome when nothing was left to do."""
    fleet = claim.document["fleet"]
    pending = _pending(fleet)
    number = int(fleet.get("dispatches") or 0) + 1
    store.update(claim, keep_lease=False, owner=None, fleet={**fleet, "dispatches": number})
    if not pending:
        return finalize(request, services)
    body = request.model_dump(mode="json")
    for index in pending:
        sender.send_request(body, message_id=child_message_id(request.requestId, index, number), properties={WORKSPACE: index})
    log.info("children dispatched", extra={"children": len(pending), "dispatch": number})
    return None


def run_here(request: DsrRequest, services: Any, store: StateStore, claim: Claim) -> dict[str, Any]:
    """The CLI's fan-out: every unfinished workspace on a pool of ``DSR_WORKSPACE_CONCURRENCY`` threads,
    through the same children (state, checkpoints, fan-in) as the Function app."""
    fleet = claim.document["fleet"]
    store.update(claim, keep_lease=False, owner=None)
    pending = _pending(fleet)
    busy: RequestBusy | None = None
    finished: dict[str, Any] | None = None
    with ThreadPoolExecutor(max_workers=services.settings.workspace_concurrency, thread_name_prefix="dsr-ws") as pool:
        futures = [
            pool.submit(contextvars.copy_context().run, run_child, request, index, services, budget_seconds=None, last=True)
            for index in pending
        ]
        for future in futures:
            try:
                run = future.result()
            except RequestBusy as exc:
                busy = exc
                continue
            finished = run.event or finished
    if busy is not None:
        raise busy  # another worker holds a workspace; the CLI waits for its lease and runs again
    if finished is None:
        finished = finalize(request, services)
    if finished is None:
        found = store.read(request.requestId)
        if found is not None and found[0].get("status") in FINAL and found[0].get("outcome"):
            return dict(found[0]["outcome"])
        raise RetryableError("the request's workspaces did not all finish", code="workspaces_unfinished")
    return finished


# -- a child ----------------------------------------------------------------------------------------------


@dataclass
class ChildRun:
    """``done`` (maybe with the request's outcome, when this child finished it), ``suspended`` (its time
    budget ran out after a checkpoint: continue it), or ``orphan`` (nothing to do)."""

    kind: str
    event: dict[str, Any] | None = None
    continuation: int = 0


_slots_lock = threading.Lock()
_slots: dict[int, threading.BoundedSemaphore] = {}


@contextlib.contextmanager
def _workspace_slot(limit: int) -> Iterator[None]:
    """At most ``DSR_WORKSPACE_CONCURRENCY`` workspaces in flight in this process."""
    with _slots_lock:
        slot = _slots.setdefault(limit, threading.BoundedSemaphore(limit))
    with slot:
        yield


def run_child(request: DsrRequest, index: int, services: Any, *, budget_seconds: float | None, last: bool) -> ChildRun:
    """Run workspace ``index`` of the request (its own lease and checkpoints), record its result in the
    parent and finish the request when it was the last. ``last``: no redelivery will come, so a failure
    is recorded as a failed workspace instead of raised. ``RequestBusy``/``LeaseLost``: another worker has it."""
    store: StateStore = services.state()
    found = store.read(request.requestId)
    fleet = found[0].get("fleet") if found else None
    if found is None or not isinstance(fleet, dict) or not 0 <= index < len(fleet["workspaces"]):
        log.warning("a workspace message without its request's recorded workspaces was dropped", extra={"index": index})
        return ChildRun("orphan")
    parent = found[0]
    if parent.get("status") in FINAL:
        return ChildRun("done", _unpublished(parent))
    if str(index) in fleet["results"]:
        return ChildRun("done", finalize(request, services))
    entry = fleet["workspaces"][index]
    target = Target.model_validate(entry["target"])
    claim = store.claim(
        child_id(request.requestId, index),
        request.model_dump(mode="json"),
        extra={"parent": request.requestId, "index": index, "workspace": target.resource_id},
    )
    part: dict[str, Any] | None
    if claim.kind == "final":
        part = claim.outcome or failed_part("internal_error", "the workspace's result was lost", target.resource_id)
    else:
        started_at = parent.get("startedAt") or parent.get("createdAt") or ""
        try:
            with _workspace_slot(services.settings.workspace_concurrency):
                part = _run_owned(request.for_workspace(target), services, store, claim, started_at, budget_seconds)
        except (RequestBusy, LeaseLost):
            raise
        except BaseException as exc:
            if not last or not isinstance(exc, Exception):
                store.abandon(claim)
                raise
            code, message, _ = describe_failure(exc)
            log.error("workspace failed on its last delivery; recorded as failed", extra={"index": index, "code": code})
            part = failed_part(code, message, target.resource_id)
        if part is None:
            continuation = int(claim.document.get("continuations") or 0) + 1
            store.release(claim, continuation=continuation)
            return ChildRun("suspended", continuation=continuation)
        store.finish(claim, part)
    assert part is not None
    record_result(store, request, index, workspace_entry(request.operation, target.resource_id, part["data"]))
    return ChildRun("done", finalize(request, services))


def _run_owned(
    request: DsrRequest, services: Any, store: StateStore, claim: Claim, started_at: str, budget_seconds: float | None
) -> dict[str, Any] | None:
    clock = time.monotonic()
    cancel_requested = CancelWatch(store, claim, interval=services.settings.checkpoint_seconds, request_id=request.requestId)
    with LeaseKeeper(store, claim) as lease:

        def should_stop() -> bool:
            return lease.lost.is_set() or (budget_seconds is not None and time.monotonic() - clock >= budget_seconds)

        part = run_part(
            request,
            services,
            started_at,
            checkpoint=claim.checkpoint,
            save=lambda checkpoint: store.save_checkpoint(claim, checkpoint),
            should_stop=should_stop,
            cancel_requested=cancel_requested,
        )
        if lease.lost.is_set():
            raise LeaseLost("another worker took over this workspace; this worker stops")
    if part is not None and azure_ml_unavailable(part["data"]):
        raise RetryableError(
            "Azure ML did not answer (throttling, 5xx or connection failures after every retry)", code="azure_ml_unavailable"
        )
    return part


def record_result(store: StateStore, request: DsrRequest, index: int, entry: dict[str, Any]) -> None:
    def change(doc: dict[str, Any]) -> dict[str, Any] | None:
        fleet = doc.get("fleet")
        if doc.get("status") in FINAL or not isinstance(fleet, dict) or str(index) in fleet["results"]:
            return None
        return {"fleet": {**fleet, "results": {**fleet["results"], str(index): entry}}}

    store.modify(request.requestId, change)


# -- fan-in ------------------------------------------------------------------------------------------------


def finalize(request: DsrRequest, services: Any) -> dict[str, Any] | None:
    """Make and store the request's one outcome once every workspace has a result. Returns it to the one
    caller that must publish it (then ``mark_published``); None to everyone else."""
    store: StateStore = services.state()
    me = f"{store.owner}:{uuid.uuid4().hex[:8]}"

    def take(doc: dict[str, Any]) -> dict[str, Any] | None:
        fleet = doc.get("fleet")
        if doc.get("status") in FINAL or not isinstance(fleet, dict) or _pending(fleet):
            return None
        held = doc.get("finalizing") or {}
        if held and float(held.get("until") or 0) > store.clock():
            return None  # another worker is finishing it
        return {"finalizing": {"owner": me, "until": store.clock() + store.lease_seconds}}

    taken = store.modify(request.requestId, take)
    if taken is None or not taken[1]:
        return None
    doc = taken[0]
    fleet = doc["fleet"]
    parts: list[tuple[str, dict[str, Any]]] = []
    for index, workspace in enumerate(fleet["workspaces"]):
        rid = workspace["workspace"]
        child = store.read(child_id(request.requestId, index))
        outcome = child[0].get("outcome") if child else None
        if isinstance(outcome, dict) and isinstance(outcome.get("data"), dict):
            parts.append((rid, outcome["data"]))
        else:  # recorded without a child document (the watchdog closed a workspace that never started)
            result = fleet["results"][str(index)]
            counts = {rid: result["counts"]} if result["status"] != "failed" else {}
            parts.append((rid, {"status": result["status"], "counts": counts, "errors": result["errors"]}))
    started_at = doc.get("startedAt") or doc.get("createdAt") or ""
    if doc.get("cancelRequested") and request.operation == "export":  # cancelled: no manifest, no file is left
        event = cancelled_export(request.requestId, services.bundles(), started_at=started_at, state=doc)
    else:
        event = finish(
            request,
            services,
            started_at,
            parts,
            discovered=fleet.get("discovered"),
            request_errors=list(fleet.get("errors") or []),
        )
        event = recast_cancelled(event) if doc.get("cancelRequested") else event
    event["data"]["dueBy"] = doc.get("dueBy")

    def close(current: dict[str, Any]) -> dict[str, Any] | None:
        if current.get("status") in FINAL or (current.get("finalizing") or {}).get("owner") != me:
            return None
        return {
            "status": event["data"]["status"],
            "outcome": event,
            "finalizing": None,
            "owner": None,
            "leaseUntil": 0.0,
            "checkpoint": None,
            "outcomePublished": False,
        }

    closed = store.modify(request.requestId, close)
    if closed is None or not closed[1]:
        return None
    log.info("request finished from its workspaces", extra={"status": event["data"]["status"], "workspaces": len(parts)})
    return event


def mark_published(store: StateStore, request_id: str) -> None:
    store.modify(request_id, lambda doc: None if doc.get("outcomePublished") is not False else {"outcomePublished": True})


def _unpublished(parent: dict[str, Any]) -> dict[str, Any] | None:
    """The outcome of a finished request whose finisher did not get to publish it (it crashed, or its
    publish failed), for a later child delivery to publish: the same event id, so Service Bus duplicate
    detection drops it should the finisher have published it after all."""
    if parent.get("outcomePublished") is not False or not parent.get("outcome"):
        return None
    return dict(parent["outcome"])
