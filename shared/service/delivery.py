"""Settlement of one queue delivery: what the transport must do with a request message once it was handled.

The trigger (``handlers/servicebus.py``) hands over the body and the delivery facts; ``process_delivery``
runs the service layer within the time budget and returns a ``Verdict``; a ``Settlement`` carries it out.

    outcome (completed, partial, failed, rejected)   publish it                      complete
    time budget spent (checkpoint saved)            send a continuation message     complete
    another worker owns the request (busy/lost)     nothing (that worker goes on)   complete
    permanent failure (PermanentError)              publish ``failed``              complete
    transient failure, deliveries left              publish nothing                 redeliver
    transient failure, last delivery                publish ``failed``              dead-letter

A transient failure is any other exception: ``RetryableError``, an azure-core ``AzureError`` (storage,
Service Bus, identity), a configuration error, anything unexpected. The last delivery is
``delivery_count >= DSR_MAX_DELIVERY_COUNT`` (keep it equal to the queue's ``maxDeliveryCount``); its
``failed`` outcome is not recorded as the request's final state, so a replay from the dead-letter queue
resumes from the last checkpoint. Outcomes are published after the verdict is known, so a failed publish
is a transient failure of the delivery, not of the request. A request dropped as a duplicate whose owner
then dies is picked up by the watchdog (``shared.service.watchdog.sweep``, run by ``handlers/timers.py``).

``AutoCompleteSettlement`` is the settlement of a trigger with ``autoCompleteMessages``: completing is
returning normally; redelivering and dead-lettering are raising (after ``maxDeliveryCount`` deliveries the
queue moves the message to its dead-letter queue). Explicit settlement (the message actions of
``azurefunctions-extensions-bindings-servicebus``) implements the same ``Settlement`` protocol without
touching this policy.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import shared.telemetry as telemetry
from shared.domain import contract
from shared.domain.deadletter import REPLAY_COUNT
from shared.domain.errors import DsrError, RequestRejected
from shared.domain.outcome import failed_event, unreadable_id
from shared.logs import request_context
from shared.ports import RequestSender
from shared.service import fanout
from shared.service.failures import describe_failure
from shared.service.processor import Services, process, publish
from shared.service.state import LeaseLost, RequestBusy

log = logging.getLogger("dsr.delivery")

Action = Literal["complete", "redeliver", "dead_letter"]

# Application properties of the messages the app puts on the request queue itself.
CONTINUATION = "dsrContinuation"
REQUEUE = "dsrRequeue"  # set by shared.service.watchdog
ORIGIN_MESSAGE_ID = "dsrOriginMessageId"


@dataclass(frozen=True)
class Delivery:
    """The transport facts of one delivery of a request message."""

    message_id: str | None = None
    delivery_count: int = 1
    enqueued_time: datetime | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Verdict:
    """What the transport must do. ``outcome`` is the event that was published (None: none was)."""

    action: Action
    outcome: dict[str, Any] | None = None
    code: str | None = None
    reason: str | None = None

    def error(self) -> DeliveryFailed:
        return DeliveryFailed(self.reason or "the request could not be processed", code=self.code or "transient_error")


class DeliveryFailed(DsrError):
    """Raised to make Service Bus redeliver (or dead-letter). Coded and redacted; no chained cause."""

    code = "delivery_failed"


class Settlement(Protocol):
    def settle(self, verdict: Verdict) -> None: ...


class AutoCompleteSettlement:
    """Settlement through the Functions host's auto-complete: return to complete, raise to abandon."""

    def settle(self, verdict: Verdict) -> None:
        if verdict.action == "complete":
            return
        raise verdict.error() from None


AUTO_COMPLETE = AutoCompleteSettlement()


class _HeldOutcomes:
    """An outcome publisher that keeps events until the verdict says they may go out."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def publish(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def process_delivery(body: bytes | str, delivery: Delivery, services: Services, requests: RequestSender | None = None) -> Verdict:
    """Run one delivered request message through the service layer and decide its settlement.

    Without a request queue to continue on, the request is processed to its end (no time budget). The
    invocation is one ``dsr.request`` span, linked to the span that sent the message (its ``traceparent``).
    """
    # every line of the delivery names its request (an unreadable body: the digest its outcome carries)
    with (
        request_context(request_identity(body)[0]),
        telemetry.invocation(delivery.properties, delivery_count=delivery.delivery_count) as invocation,
    ):
        verdict = _deliver(body, delivery, services, requests)
        invocation.outcome = verdict_outcome(verdict)
        if verdict.action == "dead_letter":
            telemetry.dead_lettered(verdict.code)
    return verdict


def verdict_outcome(verdict: Verdict) -> str:
    """The ``outcome`` of a delivery in ``dsr.requests``: a final status, or what the transport was told."""
    if verdict.action == "dead_letter":
        return "dead_lettered"
    if verdict.action == "redeliver":
        return "redelivered"
    if verdict.outcome is not None:
        return str(verdict.outcome["data"]["status"])
    if verdict.code == "continued":
        return "continued"
    return "duplicate" if verdict.code in ("request_in_progress", "lease_lost") else verdict.code or "completed"


def _deliver(body: bytes | str, delivery: Delivery, services: Services, requests: RequestSender | None) -> Verdict:
    last = delivery.delivery_count >= services.settings.max_delivery_count
    facts: dict[str, Any] = {
        "messageId": delivery.message_id,
        "deliveryCount": delivery.delivery_count,
        "lastDelivery": last,
        "enqueuedTime": delivery.enqueued_time.isoformat() if delivery.enqueued_time else None,
    }
    for name in (CONTINUATION, REQUEUE, REPLAY_COUNT, fanout.WORKSPACE):
        if name in delivery.properties:
            facts[name] = delivery.properties[name]
    log.info("message received", extra=facts)
    held = _HeldOutcomes()
    budget = services.settings.time_budget_seconds if requests is not None else None
    index = fanout.child_index(delivery.properties)
    if index is not None:
        return _process_child(body, index, delivery, services, requests, budget, last, facts)
    try:
        result = process(body, dataclasses.replace(services, publishers=[held]), budget_seconds=budget, requests=requests)
    except (RequestBusy, LeaseLost) as exc:
        request_id, _ = request_identity(body)
        with request_context(request_id):
            log.info(
                "another worker owns this request; this delivery is dropped as a duplicate", extra={**facts, "code": exc.code}
            )
        return Verdict("complete", code=exc.code, reason=exc.message)
    except Exception as exc:  # noqa: BLE001 - every failure is classified; the verdict decides about raising
        return _failure(exc, body, delivery, services, last)
    if result.suspended:
        assert requests is not None and result.request is not None
        request_id = result.request.requestId
        with request_context(request_id):
            try:
                requests.send_request(
                    result.request.model_dump(mode="json"),
                    message_id=f"{request_id}:cont:{result.continuation}",
                    properties={CONTINUATION: result.continuation, ORIGIN_MESSAGE_ID: delivery.message_id or ""},
                )
            except Exception as exc:  # noqa: BLE001 - without a continuation, redelivery resumes from the checkpoint
                return _failure(exc, body, delivery, services, last)
            log.info("time budget spent: continuation sent", extra={**facts, "continuation": result.continuation})
        return Verdict("complete", code="continued", reason=f"continuation {result.continuation} sent")
    if result.fanned_out:
        return Verdict("complete", code="fanned_out", reason="one message per workspace was sent")
    try:
        _publish(held.events, services)
    except Exception as exc:  # noqa: BLE001 - an outcome that cannot be published is a transient failure
        code, message, _ = describe_failure(exc)
        with request_context(_event_request_id(held.events) or "unknown"):
            if not last:
                log.warning("the outcome could not be published; the message will be redelivered", extra={**facts, "code": code})
                return Verdict("redeliver", code=code, reason=message)
            log.error("the outcome could not be published on the last delivery", extra={**facts, "code": code})
            return Verdict("dead_letter", code=code, reason=message)
    return Verdict("complete", outcome=result.event)


def _process_child(
    body: bytes | str,
    index: int,
    delivery: Delivery,
    services: Services,
    requests: RequestSender | None,
    budget: float | None,
    last: bool,
    facts: dict[str, Any],
) -> Verdict:
    """One workspace of a fanned-out request (``shared.service.fanout``). It never publishes an outcome of
    its own: only the request's one outcome, when this child was the last to finish."""
    request_id, _ = request_identity(body)
    with request_context(request_id):
        try:
            request = contract.parse_request(body)
        except RequestRejected:
            log.error("a workspace message that is not a valid request was dropped", extra=facts)
            return Verdict("complete", code="invalid_child", reason="not a valid request")
        if index < 0:
            log.error("a workspace message with an unreadable index was dropped", extra=facts)
            return Verdict("complete", code="invalid_child", reason="unreadable workspace index")
        try:
            run = fanout.run_child(request, index, services, budget_seconds=budget, last=last)
        except (RequestBusy, LeaseLost) as exc:
            log.info(
                "another worker owns this workspace; this delivery is dropped as a duplicate", extra={**facts, "code": exc.code}
            )
            return Verdict("complete", code=exc.code, reason=exc.message)
        except Exception as exc:  # noqa: BLE001 - classified; a child never publishes a failed outcome of its own
            code, message, _ = describe_failure(exc)
            extra = {**facts, "code": code, "error": type(exc).__name__}
            if last:
                log.error("workspace failure on the last delivery; the message goes to the dead-letter queue", extra=extra)
                return Verdict("dead_letter", code=code, reason=message)
            log.warning("workspace failure; the message will be redelivered", extra=extra)
            return Verdict("redeliver", code=code, reason=message)
        if run.kind == "suspended":
            assert requests is not None
            try:
                requests.send_request(
                    request.model_dump(mode="json"),
                    message_id=f"{fanout.child_id(request.requestId, index)}:cont:{run.continuation}",
                    properties={fanout.WORKSPACE: index, CONTINUATION: run.continuation},
                )
            except Exception as exc:  # noqa: BLE001 - without a continuation, redelivery resumes from the checkpoint
                code, message, _ = describe_failure(exc)
                return Verdict("dead_letter" if last else "redeliver", code=code, reason=message)
            log.info("time budget spent: workspace continuation sent", extra={**facts, "continuation": run.continuation})
            return Verdict("complete", code="continued", reason=f"continuation {run.continuation} sent")
        if run.event is None:
            return Verdict("complete", code=run.kind)
        try:
            publish(run.event, services)
            fanout.mark_published(services.state(), request.requestId)
        except Exception as exc:  # noqa: BLE001 - the stored outcome is published again by a redelivery
            code, message, _ = describe_failure(exc)
            log.warning("the outcome could not be published; the message will be redelivered", extra={**facts, "code": code})
            return Verdict("dead_letter" if last else "redeliver", code=code, reason=message)
        return Verdict("complete", outcome=run.event)


def _failure(exc: Exception, body: bytes | str, delivery: Delivery, services: Services, last: bool) -> Verdict:
    code, message, permanent = describe_failure(exc)
    request_id, operation = request_identity(body)
    with request_context(request_id):
        extra = {
            "messageId": delivery.message_id,
            "deliveryCount": delivery.delivery_count,
            "code": code,
            "error": type(exc).__name__,
        }
        if permanent or last:
            event = failed_event(request_id, operation, code, message)
            published = _publish_quietly([event], services)
            if permanent:
                log.error("permanent failure; the request is closed as failed", extra=extra)
                return Verdict("complete", outcome=event if published else None, code=code, reason=message)
            log.error("failure on the last delivery; the message goes to the dead-letter queue", extra=extra)
            return Verdict("dead_letter", outcome=event if published else None, code=code, reason=message)
        log.warning("transient failure; the message will be redelivered", extra=extra)
        return Verdict("redeliver", code=code, reason=message)


def request_identity(body: bytes | str) -> tuple[str, str | None]:
    """The requestId and operation of a message that could not be processed (a digest when unreadable)."""
    request_id, operation = contract.request_identity(body)
    return request_id or unreadable_id(body), operation


def _event_request_id(events: list[dict[str, Any]]) -> str | None:
    return events[0]["data"]["requestId"] if events else None


def _publish(events: list[dict[str, Any]], services: Services) -> None:
    for event in events:
        publish(event, services)


def _publish_quietly(events: list[dict[str, Any]], services: Services) -> bool:
    """Publish on the way to the dead-letter queue; a failure here must not hide the original one."""
    try:
        _publish(events, services)
    except Exception as exc:  # noqa: BLE001 - logged; the message still goes to the dead-letter queue
        log.error("the outcome could not be published", extra={"error": type(exc).__name__})
        return False
    return True
