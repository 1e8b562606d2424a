"""Delete requests: plan first, then delete exactly the plan, then prove it by reading every item back.

Per item: 200/202 -> deleted (a 202 is followed to its end), 204/404 -> absent (already gone; also what a
retry sees after a DELETE whose response was lost), anything else after the HTTP retries -> failed.
Only a 404 on the read-back counts as verified. Every action is appended to the request's audit blob.

The pipeline (``run_delete``): plan → execute → verify → workspace delete → result. The plan is
``delete_plan.py`` (listing by the traversal rules' bindings, subject scope by ``subject_scope.delete_verdict``),
saved as ``checkpoint.DeleteCheckpoint``; ``DeleteRun`` executes it (DELETE level by level, following
long-running operations), verifies it (reads every item back) and writes the audit lines; ``_result`` builds
the part's outcome.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import shared.telemetry as telemetry
from shared.domain.catalog import Catalog
from shared.domain.contract import DsrRequest, Target
from shared.domain.errors import (
    AzureMLError,
    LroTimeoutError,
    NotFoundError,
    PermanentError,
    capped_wait,
    parse_retry_after,
)
from shared.domain.outcome import FinalStatus, cap_outcome, error_entry, outcome_event, utc_now
from shared.domain.urls import redact_url, with_query
from shared.ports import ApiResponse, AuditLog, AzureML, audit_blob_name
from shared.service.checkpoint import plan_checkpoint, restore_plan
from shared.service.delete_plan import DeletePlan, DeletePlanner, PlannedItem
from shared.service.listing import Endpoints, url_for
from shared.settings import Settings

log = logging.getLogger("dsr.delete")

PLAN_LIMIT_IN_EVENT = 2000
# how a long-running delete ended: ``unknown`` when its status cannot be read (the read-back decides), ``timeout``
# when it is still running at the deadline (``DSR_LRO_DEADLINE_SECONDS``)
LroEnd = Literal["deleted", "failed", "unknown", "timeout"]
MMS_TERMINAL: dict[str, LroEnd] = {
    "succeeded": "deleted",
    "failed": "failed",
    "cancelled": "failed",
    "canceled": "failed",
    "timedout": "failed",
}
ARM_TERMINAL: dict[str, LroEnd] = {"succeeded": "deleted", "failed": "failed", "canceled": "failed", "cancelled": "failed"}


class Poller:
    """Follows a long-running operation to its end, honouring Retry-After (capped by ``max_retry_after``),
    within a deadline: no wait a server asks for ever outlasts the deadline."""

    def __init__(
        self,
        aml: AzureML,
        *,
        deadline_seconds: float,
        max_retry_after: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.aml = aml
        self.deadline_seconds = deadline_seconds
        self.max_retry_after = max_retry_after
        self.sleep = sleep
        self.clock = clock

    def _wait(self, response: ApiResponse | None, attempt: int, end: float) -> None:
        header = parse_retry_after(response.headers.get("retry-after")) if response else None
        delay = capped_wait(header, self.max_retry_after, default=min(30.0, 0.5 * 2 ** min(attempt, 6)))
        self.sleep(max(0.0, min(delay, end - self.clock())))

    def follow(self, first: ApiResponse, *, terminal: dict[str, LroEnd], status_field: str) -> LroEnd:
        """How the operation ended (``LroEnd``): the terminal state it reports, ``unknown`` or ``timeout``."""
        async_url = first.headers.get("azure-asyncoperation") or first.headers.get("operation-location")
        location = first.headers.get("location")
        end = self.clock() + self.deadline_seconds
        last: ApiResponse | None = first
        attempt = 0
        while self.clock() < end:
            self._wait(last, attempt, end)
            if self.clock() >= end:
                break
            attempt += 1
            try:
                if async_url:
                    last = self.aml.get(async_url)
                    state = str((last.body or {}).get(status_field, "")).lower() if isinstance(last.body, dict) else ""
                    if state in terminal:
                        return terminal[state]
                elif location:
                    last = self.aml.get(location)
                    if last.status != 202:
                        return "deleted"
                else:
                    return "unknown"
            except NotFoundError:
                if location and not async_url:
                    return "deleted"
                last = None  # the status could not be read: not a failure of the operation
            except PermanentError as exc:  # an untrusted URL, forbidden, a bad response: asking again changes nothing
                log.warning("status poll stopped", extra={"code": exc.code})
                return "unknown"
            except AzureMLError:
                last = None  # the status could not be read: not a failure of the operation
        return "timeout"


class DeleteRun:
    def __init__(
        self,
        request: DsrRequest,
        *,
        catalog: Catalog,
        endpoints: Endpoints,
        aml: AzureML,
        audit: AuditLog,
        concurrency: int,
        lro_deadline: float,
        max_retry_after: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        cancel_requested: Callable[[], bool] | None = None,
    ) -> None:
        self.cancel_requested = cancel_requested or (lambda: False)
        self.request = request
        self.catalog = catalog
        self.endpoints = endpoints
        self.aml = aml
        self.audit = audit
        self.concurrency = max(1, concurrency)
        self.poller = Poller(aml, deadline_seconds=lro_deadline, max_retry_after=max_retry_after, sleep=sleep)

    # -- audit ----------------------------------------------------------------------------------
    def audit_lines(self, lines: list[dict[str, Any]]) -> None:
        """Append ``lines`` to the request's audit blob, each stamped with the time and the requestId."""
        stamped = [{"time": utc_now(), "requestId": self.request.requestId, **line} for line in lines]
        self.audit.append(self.request.requestId, stamped)

    def _line(self, item: PlannedItem, method: str, status: int | None, result: str, **extra: Any) -> dict[str, Any]:
        return {
            "workspace": item.target.resource_id,
            "kind": item.kind,
            "id": item.id,
            "method": method,
            "url": redact_url(item.url),
            "status": status,
            "result": result,
            **extra,
        }

    # -- plan -----------------------------------------------------------------------------------
    def plan(self) -> DeletePlan:
        return DeletePlanner(self.request, catalog=self.catalog, endpoints=self.endpoints, aml=self.aml).plan()

    def audit_plan(self, plan: DeletePlan) -> None:
        """One PLAN line per planned item (a dry run's too), before anything is deleted."""
        self.audit_lines([self._line(item, "PLAN", None, "planned", dryRun=self.request.dryRun) for item in plan.items])

    # -- execute --------------------------------------------------------------------------------
    def execute(self, plan: DeletePlan) -> None:
        """Delete level by level (catalog ``deleteLevel``: schedules, deployments, endpoints, jobs and compute
        instances, versions, containers), concurrently within a level. An item answering 409 (still used) is
        sent again after each later level, since what holds it may have gone; if it still answers 409 at the
        end it is reported ``in_use``. A container is deleted only when all its versions went."""
        todo = [i for i in plan.items if i.result in ("planned", "failed")]
        levels = sorted({self.catalog.kinds[i.kind].deleteLevel for i in todo})
        gone = {(i.target.resource_id, i.id) for i in plan.items if i.result in ("deleted", "absent")}
        conflicted: list[PlannedItem] = []
        for level in levels:
            if self.cancel_requested():  # cancelled: the levels not begun stay "planned"
                return
            batch = [i for i in todo if self.catalog.kinds[i.kind].deleteLevel == level]
            ready = [i for i in batch if all((i.target.resource_id, r) in gone for r in i.requires)]
            for item in batch:
                if item not in ready:
                    item.result, item.status = "failed", None
                    item.error = self._error(item, "versions_remain", "not deleted: not every one of its versions was deleted")
                    self.audit_lines([self._line(item, "DELETE", None, "skipped", reason="versions_remain")])
            retry, conflicted = conflicted, []
            self._parallel(self._delete_one, ready)
            if retry:  # what held them (this level and the ones before) is gone now
                self._parallel(self._delete_one, retry)
            for item in ready + retry:
                if item.result in ("deleted", "absent"):
                    gone.add((item.target.resource_id, item.id))
                elif item.status == 409:
                    conflicted.append(item)
        if conflicted:
            self._parallel(self._delete_one, conflicted)

    @staticmethod
    def _error(item: PlannedItem, code: str, message: str) -> dict[str, Any]:
        return error_entry(code, message, kind=item.kind, target=item.target.resource_id, id=item.id)

    @telemetry.in_workspace(lambda self, item: item.target)
    def _delete_one(self, item: PlannedItem) -> None:
        if self.cancel_requested():  # a checkpoint: the items not sent yet stay "planned"
            return
        kind = self.catalog.kinds[item.kind]
        if kind.family == "arm":
            self._send_delete(item, terminal=ARM_TERMINAL, status_field="status", query=kind.deleteQuery)
        else:
            self._send_delete(item, terminal=MMS_TERMINAL, status_field="state")

    def _send_delete(
        self,
        item: PlannedItem,
        *,
        terminal: dict[str, LroEnd],
        status_field: str,
        query: dict[str, str] | None = None,
        **audit: Any,
    ) -> None:
        """DELETE one item and classify the answer: the one place for 200/202/204/404/anything else."""
        item.error = None
        try:
            response = self.aml.delete(with_query(item.url, query) if query else item.url)
            item.status = response.status
            if response.status == 204:
                item.result = "absent"
            elif response.status == 202:
                result = self.poller.follow(response, terminal=terminal, status_field=status_field)
                if result == "timeout":
                    raise LroTimeoutError(
                        f"the delete was accepted but still running after {self.poller.deadline_seconds:g} seconds",
                        status=202,
                    )
                # an operation of unknown end was accepted: the read-back decides
                item.result = "failed" if result == "failed" else "deleted"
            else:
                item.result = "deleted"
        except NotFoundError as exc:
            item.status, item.result = exc.status, "absent"
        except AzureMLError as exc:
            item.status, item.result = exc.status, "failed"
            if exc.status == 409:
                item.error = self._error(item, "in_use", f"still in use by another resource: {exc.message}")
            else:
                item.error = self._error(item, exc.code, exc.message)
        self.audit_lines([self._line(item, "DELETE", item.status, item.result, **audit)])

    @telemetry.in_workspace(lambda self, item: item.target)
    def _verify_one(self, item: PlannedItem) -> None:
        status: int | None
        try:
            response = self.aml.get(item.url)
            status, outcome = response.status, "still_present"
        except NotFoundError as exc:
            status, outcome = exc.status, "verified_gone"
            item.verified = True
        except AzureMLError as exc:
            status, outcome = exc.status, "verify_failed"
        if not item.verified and item.error is None:
            if outcome == "still_present":
                item.error = self._error(item, "still_present", "the item still answers a GET after its DELETE")
            else:
                item.error = self._error(item, "verify_failed", "the read-back after the DELETE failed")
        self.audit_lines([self._line(item, "GET", status, outcome)])

    # -- verify ---------------------------------------------------------------------------------
    def verify(self, plan: DeletePlan) -> None:
        """Read back every item deleted or absent: only a 404 counts as verified. A failed item keeps its error;
        the others' error is the read-back's."""
        for item in plan.items:
            item.verified = False
            if item.result != "failed":
                item.error = None
        self._parallel(self._verify_one, [i for i in plan.items if i.result in ("deleted", "absent")])

    def audit_cancel(self, plan: DeletePlan) -> None:
        """The tally of a cancelled run (deleted, absent, failed, not attempted, verified), audited and logged."""
        tally = {r: sum(i.result == r for i in plan.items) for r in ("deleted", "absent", "failed")}
        tally["notAttempted"] = sum(i.result == "planned" for i in plan.items)
        tally["verified"] = sum(i.verified for i in plan.items)
        self.audit_lines([{"method": "CANCEL", "result": "cancelled", **tally}])
        log.info("delete cancelled", extra=tally)

    def _parallel(self, func: Callable[[PlannedItem], None], items: list[PlannedItem]) -> None:
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="dsr-delete") as pool:
            # each item runs in a copy of the caller's context (requestId for the logs, the request's span),
            # taken here: a copy made inside the pool's thread would be that thread's empty context
            contexts = [contextvars.copy_context() for _ in items]
            list(pool.map(lambda ctx, it: ctx.run(func, it), contexts, items))

    @telemetry.in_workspace(lambda self, target: target)
    def delete_workspace(self, target: Target) -> dict[str, Any]:
        spec = self.catalog.workspaceDelete
        url = url_for(self.catalog, self.endpoints, spec, spec.item, target, {})
        item = PlannedItem(target=target, kind="workspace", id=target.resource_id, url=url)
        self._send_delete(item, terminal=ARM_TERMINAL, status_field="status", purge=True)
        ws_kind = self.catalog.kinds["workspace"]
        assert ws_kind.item
        item.url = url_for(self.catalog, self.endpoints, ws_kind, ws_kind.item, target, {})
        if item.result != "failed":
            self._verify_one(item)
        return {"result": item.result, "verified": item.verified, "purge": True, "error": item.error}


def audit_location(settings: Settings, request_id: str) -> dict[str, str]:
    """A delete outcome's ``data.audit``: where its audit lines are (the full list when the outcome was cut)."""
    return {"container": settings.audit_container, "blob": audit_blob_name(request_id)}


def run_delete(
    request: DsrRequest,
    services: Any,
    started_at: str,
    *,
    checkpoint: Any = None,
    save: Callable[[dict[str, Any]], None] | None = None,
    cancel_requested: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """The delete pipeline: plan → execute → verify → workspace delete → result.

    A resumed run keeps its plan: items already deleted answer 204/404 (absent) on the second DELETE, so
    nothing outside the plan is ever touched. ``cancel_requested`` is asked after the plan and before each
    DELETE: a cancelled run sends no more DELETEs, reads back what it did delete, audits the tally and
    answers ``cancelled``."""
    cancelled = cancel_requested or (lambda: False)
    settings = services.settings
    run = DeleteRun(
        request,
        catalog=services.catalog,
        endpoints=Endpoints(settings.endpoints),
        aml=services.aml(),
        audit=services.audit(),
        concurrency=settings.concurrency,
        lro_deadline=settings.lro_deadline_seconds,
        max_retry_after=settings.max_retry_after,
        cancel_requested=cancelled,
    )
    plan, stopped = _plan(run, request, checkpoint, save, cancelled)
    errors = list(plan.errors)
    workspace_deletes: dict[str, Any] = {}
    if not request.dryRun:
        run.execute(plan)
        stopped = stopped or cancelled()
        if save and not stopped:
            save({"delete": plan_checkpoint(plan, "deleted")})
        run.verify(plan)
        errors += [i.error for i in plan.items if i.error]
        if stopped:
            run.audit_cancel(plan)
        elif request.deleteWorkspace:
            errors += _delete_workspace(run, request.targets[0], plan, errors, workspace_deletes)
    return _result(run, services, plan, errors, workspace_deletes, started_at=started_at, stopped=stopped)


def _plan(
    run: DeleteRun,
    request: DsrRequest,
    checkpoint: Any,
    save: Callable[[dict[str, Any]], None] | None,
    cancelled: Callable[[], bool],
) -> tuple[DeletePlan, bool]:
    """The plan (the saved one of a resumed run, else a new one, audited and saved before any DELETE), and
    whether the run was cancelled before it began (then nothing is listed and nothing deleted)."""
    saved = checkpoint.get("delete") if isinstance(checkpoint, dict) else None
    if saved:
        plan, phase = restore_plan(saved)
        log.info("resuming a delete from its saved plan", extra={"planned": len(plan.items), "phase": phase})
        return plan, False
    if cancelled():
        return DeletePlan(), True
    plan = run.plan()
    run.audit_plan(plan)
    if save and not request.dryRun:
        save({"delete": plan_checkpoint(plan, "planned")})
    return plan, False


def _delete_workspace(
    run: DeleteRun, target: Target, plan: DeletePlan, errors: list[dict[str, Any]], workspace_deletes: dict[str, Any]
) -> list[dict[str, Any]]:
    """The workspace's purge delete, only when every deletion before it succeeded: its entry goes into
    ``workspace_deletes``; the errors it adds are returned (skipped, failed or still present)."""
    if target.resource_id in plan.failed_targets or errors:
        return [
            error_entry(
                "workspace_delete_skipped",
                "the workspace was not deleted because the deletions before it did not all succeed",
                kind="workspace",
                target=target.resource_id,
            )
        ]
    outcome = run.delete_workspace(target)
    workspace_deletes[target.resource_id] = {k: v for k, v in outcome.items() if k != "error"}
    if outcome["error"] or not outcome["verified"]:
        return [
            outcome["error"]
            or error_entry(
                "workspace_still_present",
                "the workspace still answers a GET after its purge delete",
                kind="workspace",
                target=target.resource_id,
            )
        ]
    return []


def _counts(request: DsrRequest, catalog: Catalog, plan: DeletePlan) -> dict[str, dict[str, dict[str, int]]]:
    """``data.counts``: per workspace that could be listed, per kind asked (and the containers a kind empties)."""
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for target in request.targets:
        if target.resource_id in plan.failed_targets:
            continue
        per_kind = counts.setdefault(target.resource_id, {})
        for kind in request.kinds:
            per_kind[kind] = {"planned": 0, "deleted": 0, "absent": 0, "failed": 0, "verified": 0}
            source = catalog.kinds[kind].source
            if catalog.kinds[kind].deletesEmptiedContainer and source is not None:
                per_kind[source.kind] = {"planned": 0, "deleted": 0, "absent": 0, "failed": 0, "verified": 0}
    for item in plan.items:
        c = counts[item.target.resource_id][item.kind]
        c["planned"] += 1
        if item.result in ("deleted", "absent", "failed"):
            c[item.result] += 1
        c["verified"] += int(item.verified)
    return counts


def _result(
    run: DeleteRun,
    services: Any,
    plan: DeletePlan,
    errors: list[dict[str, Any]],
    workspace_deletes: dict[str, Any],
    *,
    started_at: str,
    stopped: bool,
) -> dict[str, Any]:
    """The delete's outcome event, capped; what the cap leaves out of it is appended to the audit blob."""
    request = run.request
    planned = len(plan.items)
    verified = sum(i.verified for i in plan.items)
    ok_targets = len(request.targets) - len(plan.failed_targets)
    status: FinalStatus
    if stopped:
        status = "cancelled"
    elif not errors:
        status = "completed"
    elif ok_targets == 0 or (planned and verified == 0 and not request.dryRun):
        status = "failed"
    else:
        status = "partially_completed"
    data: dict[str, Any] = {
        "dryRun": request.dryRun,
        "counts": _counts(request, services.catalog, plan),
        "errors": errors,
        "startedAt": started_at,
        "completedAt": utc_now(),
        "audit": audit_location(services.settings, request.requestId),
    }
    listing = [i.as_dict() for i in plan.items[:PLAN_LIMIT_IN_EVENT]]
    data["plan" if request.dryRun else "items"] = listing
    if planned > PLAN_LIMIT_IN_EVENT:
        data["itemsTruncated"] = True
    if request.dryRun and request.deleteWorkspace:
        # a dry run says a purge follows: the workspace is listed as a planned deletion, after the kinds
        target = request.targets[0]
        if target.resource_id not in plan.failed_targets:
            listing.append({"kind": "workspace", "id": target.resource_id, "target": target.resource_id, "result": "planned"})
            workspace_deletes[target.resource_id] = {"result": "planned", "verified": False, "purge": True}
    if workspace_deletes:
        data["workspaceDeletes"] = workspace_deletes
    if request.scope == "subject":
        data["scope"] = "subject"
        owned = sum(1 for i in plan.items if not i.requires and i.kind in request.kinds)
        data["subjectMatches"] = {"scanned": plan.scanned, "identity": owned, "mentionOnly": len(plan.review)}
        data["review"] = plan.review[:PLAN_LIMIT_IN_EVENT]
    log.info("delete finished", extra={"planned": planned, "verified": verified, "dryRun": request.dryRun})
    event = outcome_event(request.requestId, "delete", status, data)
    capped, cut = cap_outcome(event)
    if cut:
        # the audit blob already holds every item (PLAN, DELETE, GET lines); the errors and the review list
        # the outcome leaves out are appended to it, so the outcome can name it as the full list
        listed = {k: len(capped["data"].get(k) or []) for k in ("errors", "review")}
        left_out = [{"method": "ERROR", "error": e} for e in errors[listed["errors"] :]]
        left_out += [{"method": "REVIEW", "review": r} for r in plan.review[listed["review"] :]]
        if left_out:
            run.audit_lines(left_out)
    return capped
