"""The service layer: one request message in, one outcome event out.

``handle`` validates (an invalid message is rejected before any I/O), runs the export or delete
through the ports, writes the manifest, publishes the outcome and returns it. Transient failures that
outlast the HTTP retries raise, so the transport (Service Bus) can redeliver.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import shared.telemetry as telemetry
from shared.domain.catalog import Catalog
from shared.domain.contract import DsrRequest, parse_request
from shared.domain.errors import RequestRejected, RetryableError, Violation
from shared.domain.outcome import cap_outcome, rejected_event, utc_now
from shared.logs import request_context
from shared.ports import AuditLog, AzureML, BundleStore, OutcomePublisher, RequestSender
from shared.service import fanout
from shared.service.bundle import manifest_name
from shared.service.cancel import cancelled_export
from shared.service.delete import run_delete
from shared.service.state import CancelWatch, Claim, LeaseKeeper, LeaseLost, RequestIdReused, StateStore
from shared.service.workspaces import TRANSIENT_CODES, export_part_data, export_traversal, finish, with_workspaces
from shared.settings import Settings

log = logging.getLogger("dsr.processor")


@dataclass
class Services:
    """What the service layer needs; ``bootstrap`` builds the real ones lazily, tests pass fakes."""

    settings: Settings
    catalog: Catalog
    aml: Callable[[], AzureML]
    bundles: Callable[[], BundleStore]
    audit: Callable[[], AuditLog]
    state: Callable[[], StateStore]
    publishers: list[OutcomePublisher] = field(default_factory=list)


@dataclass
class ProcessResult:
    """``event`` is the outcome; ``suspended`` means the time budget ran out after a checkpoint, and the
    request must be continued (continuation number ``continuation``) by whoever delivered it."""

    event: dict[str, Any] | None
    suspended: bool = False
    continuation: int = 0
    request: DsrRequest | None = None
    fanned_out: bool = False  # one child message per workspace was sent; the last child publishes the outcome


def handle(body: bytes | str, services: Services) -> dict[str, Any]:
    """Process a request to its end in this process (the CLI): no time budget."""
    with telemetry.invocation() as invocation:
        result = process(body, services, budget_seconds=None)
        assert result.event is not None
        invocation.outcome = result.event["data"]["status"]
    return result.event


def process(
    body: bytes | str, services: Services, *, budget_seconds: float | None, requests: RequestSender | None = None
) -> ProcessResult:
    """``requests``: the request queue, to fan a many-workspace request out on (else it runs here)."""
    started_at = utc_now()
    try:
        request = parse_request(body)
    except RequestRejected as rejection:
        event = rejected_event(rejection, body, started_at=started_at)
        telemetry.describe_request(event["data"]["requestId"], event["data"]["operation"])
        with request_context(event["data"]["requestId"]):
            log.warning("request rejected", extra={"codes": [v.code for v in rejection.violations]})
            publish(event, services)
        return ProcessResult(event)
    telemetry.describe_request(request.requestId, request.operation, len(request.targets))
    with request_context(request.requestId):
        store = services.state()
        try:
            claim = store.claim(request.requestId, request.model_dump(mode="json"))
        except RequestIdReused as exc:
            reuse = RequestRejected(
                [Violation(exc.code, "requestId", exc.message)], request_id=request.requestId, operation=request.operation
            )
            event = rejected_event(reuse, body, started_at=started_at)
            log.warning("request rejected", extra={"codes": [exc.code]})
            publish(event, services)
            return ProcessResult(event, request=request)
        if claim.kind == "final":
            stored = claim.outcome
            assert stored is not None
            log.info("request already finished: its outcome is published again", extra={"status": stored["data"]["status"]})
            publish(stored, services)
            return ProcessResult(stored, request=request)
        started_at = claim.document.get("startedAt") or started_at
        if not claim.document.get("startedAt"):
            store.update(claim, startedAt=started_at)
        telemetry.describe_request(request.requestId, request.operation, attempt=claim.document.get("attempts"))
        telemetry.record_deadline(request.operation, started_at, getattr(request, "dueBy", None))
        log.info(
            "request accepted",
            extra={
                "operation": request.operation,
                "targets": len(request.targets),
                "kinds": list(request.kinds),
                "attempt": claim.document.get("attempts"),
                "resumed": claim.checkpoint is not None,
            },
        )
        cancelled_before_fleet = claim.document.get("cancelRequested") and not isinstance(claim.document.get("fleet"), dict)
        if request.fleet and not cancelled_before_fleet:  # (a request cancelled before its fan-out stops below)
            return _run_fleet(request, services, store, claim, requests)
        clock = time.monotonic()
        try:
            outcome = _run_owned(request, services, store, claim, started_at, budget_seconds, clock)
        except BaseException:
            store.abandon(claim)
            raise
        if outcome is None:
            continuation = int(claim.document.get("continuations") or 0) + 1
            store.release(claim, continuation=continuation)
            log.info("time budget spent: checkpoint saved, continuation needed", extra={"continuation": continuation})
            return ProcessResult(None, suspended=True, continuation=continuation, request=request)
        outcome["data"]["dueBy"] = claim.document.get("dueBy")
        outcome, cut = cap_outcome(outcome)  # the same capped event in state and on the queue
        if cut:
            log.warning("outcome cut to fit one message", extra={"truncated": sorted(outcome["data"].get("truncated", {}))})
        store.finish(claim, outcome)
        telemetry.record_items(outcome)
        publish(outcome, services)
        log.info("request finished", extra={"status": outcome["data"]["status"]})
        return ProcessResult(outcome, request=request)


def _run_fleet(
    request: DsrRequest, services: Services, store: StateStore, claim: Claim, requests: RequestSender | None
) -> ProcessResult:
    """Many workspaces: record them, then fan out (queue) or run them here (CLI); see ``fanout``."""
    try:
        with LeaseKeeper(store, claim) as lease:
            fanout.record_fleet(request, services, store, claim)
            if lease.lost.is_set():
                raise LeaseLost("another worker took over this request; this worker stops")
        if requests is not None:
            event = fanout.dispatch(request, services, store, claim, requests)
            if event is None:
                return ProcessResult(None, request=request, fanned_out=True)
        else:
            event = fanout.run_here(request, services, store, claim)
    except BaseException:
        store.abandon(claim)
        raise
    publish(event, services)
    fanout.mark_published(store, request.requestId)
    log.info("request finished", extra={"status": event["data"]["status"]})
    return ProcessResult(event, request=request)


def _run_owned(
    request: DsrRequest,
    services: Services,
    store: StateStore,
    claim: Claim,
    started_at: str,
    budget_seconds: float | None,
    clock: float,
) -> dict[str, Any] | None:
    cancel_requested = CancelWatch(store, claim, interval=services.settings.checkpoint_seconds)
    with LeaseKeeper(store, claim) as lease:

        def should_stop() -> bool:
            over_budget = budget_seconds is not None and time.monotonic() - clock >= budget_seconds
            return lease.lost.is_set() or over_budget or cancel_requested()

        def save(checkpoint: dict[str, Any]) -> None:
            store.save_checkpoint(claim, checkpoint)

        outcome: dict[str, Any] | None = None
        if request.operation == "export":
            if not cancel_requested():
                outcome = run_export(
                    request, services, started_at, checkpoint=claim.checkpoint, save=save, should_stop=should_stop
                )
            if outcome is None and cancel_requested() and not lease.lost.is_set():
                outcome = cancelled_export(request.requestId, services.bundles(), started_at=started_at, state=claim.document)
        else:
            outcome = with_workspaces(
                run_delete(
                    request, services, started_at, checkpoint=claim.checkpoint, save=save, cancel_requested=cancel_requested
                ),
                request,
            )
        if lease.lost.is_set():
            raise LeaseLost("another worker took over this request; this worker stops")
    if (
        outcome is not None
        and outcome["data"]["status"] == "failed"
        and outcome["data"]["errors"]
        and all(e["code"] in TRANSIENT_CODES for e in outcome["data"]["errors"])
    ):
        # Azure ML was unreachable for everything: not an answer to give the ticket, but a reason to try later
        raise RetryableError(
            "Azure ML did not answer (throttling, 5xx or connection failures after every retry)", code="azure_ml_unavailable"
        )
    return outcome


def publish(event: dict[str, Any], services: Services) -> None:
    for publisher in services.publishers:
        publisher.publish(event)


def run_export(
    request: DsrRequest,
    services: Services,
    started_at: str,
    *,
    checkpoint: Any = None,
    save: Callable[[dict[str, Any]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any] | None:
    """The export; ``None`` when it stopped at a checkpoint (time budget, lost lease) before the end."""
    resume = checkpoint.get("export") if isinstance(checkpoint, dict) else None
    if resume is None:
        # a reader must never trust a manifest while its files are being rewritten
        services.bundles().delete(manifest_name(request.requestId))
    result = export_traversal(request, services, checkpoint=checkpoint, save=save, should_stop=should_stop)
    if result.suspended:
        return None
    return finish(request, services, started_at, [(t.resource_id, export_part_data(request, result)) for t in request.targets])
