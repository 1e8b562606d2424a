"""Settlement of one queue delivery: what the transport must do with a request message once it was handled.

The trigger (``handlers/servicebus.py``) hands over the body and the delivery facts; ``process_delivery``
runs the service layer and returns a ``Verdict``; a ``Settlement`` carries it out. Policy:

    valid request, final outcome      publish the outcome           complete
    invalid request                   publish ``rejected``          complete   (it can never succeed)
    permanent failure (PermanentError) publish ``failed``            complete
    transient failure, deliveries left   publish nothing            redeliver
    transient failure, last delivery     publish ``failed``          dead-letter

A transient failure is an exception that is not a known permanent one (``RetryableError``, an azure-core
``AzureError`` from storage or Service Bus, a configuration error, anything unexpected), or an outcome
whose errors are all transient (every Azure ML call of a target gave up on 429/5xx/connection errors).
Outcomes are held back until the verdict is known, so the ticket never hears ``failed`` for a delivery
that Service Bus will retry.

``AutoCompleteSettlement`` is the settlement of a trigger with ``autoCompleteMessages``: completing is
returning normally, redelivering or dead-lettering is raising (the queue's ``maxDeliveryCount`` moves
the message to the dead-letter queue). Explicit settlement (the ``azurefunctions-extensions-bindings-
servicebus`` message actions) implements the same ``Settlement`` protocol without touching this policy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from shared.errors import DsrError, PermanentError, RequestRejected, RetryableError
from shared.logs import redact, request_context
from shared.outcome import outcome_event, utc_now
from shared.processor import Services, handle

log = logging.getLogger("dsr.delivery")

Action = Literal["complete", "redeliver", "dead_letter"]

#: Error codes of an outcome that another delivery may cure. The class codes of the retryable branch of
#: the taxonomy, plus the codes the HTTP adapter gives its ``RetryableError`` instances.
TRANSIENT_CODES: frozenset[str] = frozenset({"connection_failed", "bad_json"})


def _transient_codes() -> frozenset[str]:
    codes = set(TRANSIENT_CODES)
    stack: list[type[RetryableError]] = [RetryableError]
    while stack:
        cls = stack.pop()
        codes.add(cls.code)
        stack.extend(cls.__subclasses__())
    return frozenset(codes)


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


def process_delivery(body: bytes | str, delivery: Delivery, services: Services) -> Verdict:
    """Run one delivered request message through the service layer and decide its settlement."""
    last = delivery.delivery_count >= services.settings.max_delivery_count
    facts = {"messageId": delivery.message_id, "deliveryCount": delivery.delivery_count,
             "lastDelivery": last, "replayCount": delivery.properties.get("dsr-replay-count")}
    log.info("message received", extra=facts)
    held = _HeldOutcomes()
    try:
        event = handle(body, dataclasses.replace(services, publishers=[held]))
    except Exception as exc:  # noqa: BLE001 - every failure is classified; the verdict decides about raising
        return _failure(exc, body, delivery, services, last)
    data = event["data"]
    if _is_transient_outcome(data):
        codes = sorted({e.get("code") for e in data.get("errors", []) if isinstance(e, dict)} - {None})
        with request_context(data["requestId"]):
            if not last:
                log.warning("transient failure; the message will be redelivered", extra={**facts, "codes": codes})
                return Verdict("redeliver", code=codes[0] if codes else "transient_error",
                               reason=f"transient failure ({', '.join(codes)}); redelivery requested")
            log.error("transient failure on the last delivery; the message goes to the dead-letter queue",
                      extra={**facts, "codes": codes, "status": data["status"]})
            _publish_quietly(held.events, services)
            return Verdict("dead_letter", outcome=event, code=codes[0] if codes else "transient_error",
                           reason=f"transient failure on the last allowed delivery ({', '.join(codes)})")
    try:
        _publish(held.events, services)
    except Exception as exc:  # noqa: BLE001 - an outcome that cannot be published is a transient failure
        return _failure(exc, body, delivery, services, last)
    return Verdict("complete", outcome=event)


def _is_transient_outcome(data: Mapping[str, Any]) -> bool:
    """A failed or partial outcome whose every error another delivery may cure."""
    if data.get("status") not in ("failed", "partially_completed"):
        return False
    errors = [e for e in data.get("errors") or [] if isinstance(e, dict)]
    if not errors:
        return False
    transient = _transient_codes()
    return all(e.get("retryable") is True or e.get("code") in transient for e in errors)


def _failure(exc: Exception, body: bytes | str, delivery: Delivery, services: Services, last: bool) -> Verdict:
    code, message, permanent = describe_failure(exc)
    request_id, operation = request_identity(body)
    with request_context(request_id):
        extra = {"messageId": delivery.message_id, "deliveryCount": delivery.delivery_count, "code": code,
                 "error": type(exc).__name__}
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


def describe_failure(exc: BaseException) -> tuple[str, str, bool]:
    """``(code, message, permanent)`` of an exception, fit for an outcome event: no stack trace, no secret."""
    if isinstance(exc, (PermanentError, RequestRejected)):
        return exc.code, redact(exc.message), True
    if isinstance(exc, DsrError):  # RetryableError, ConfigurationError (fixed by ops, then replayed), ...
        return exc.code, redact(exc.message), False
    if is_azure_sdk_error(exc):
        return ("azure_service_unavailable",
                f"an Azure service call failed ({type(exc).__name__}); the request is retried from the queue", False)
    return "internal_error", f"unexpected {type(exc).__name__}; see the logs", False


def is_azure_sdk_error(exc: BaseException) -> bool:
    """An azure-core ``AzureError`` (storage, Service Bus, identity) without importing an SDK here."""
    return any(cls.__name__ == "AzureError" and cls.__module__ == "azure.core.exceptions" for cls in type(exc).__mro__)


def request_identity(body: bytes | str) -> tuple[str, str | None]:
    """The requestId and operation of a message that could not be processed (a digest when unreadable)."""
    from shared.contract import parse_request

    try:
        request = parse_request(body)
    except RequestRejected as rejection:
        if rejection.request_id:
            return rejection.request_id, rejection.operation
        raw = body.encode("utf-8", "replace") if isinstance(body, str) else bytes(body)
        return f"unreadable-{hashlib.sha256(raw).hexdigest()[:16]}", rejection.operation
    return request.requestId, request.operation


def failed_event(request_id: str, operation: str | None, code: str, message: str) -> dict[str, Any]:
    now = utc_now()
    return outcome_event(request_id, operation, "failed", {
        "counts": {},
        "errors": [{"code": code, "message": message, "kind": None, "target": None}],
        "startedAt": now,
        "completedAt": now,
    })


def _publish(events: list[dict[str, Any]], services: Services) -> None:
    for event in events:
        for publisher in services.publishers:
            publisher.publish(event)


def _publish_quietly(events: list[dict[str, Any]], services: Services) -> bool:
    """Publish on the way to the dead-letter queue; a failure here must not hide the original one."""
    try:
        _publish(events, services)
    except Exception as exc:  # noqa: BLE001 - logged; the message still goes to the dead-letter queue
        log.error("the outcome could not be published", extra={"error": type(exc).__name__})
        return False
    return True


class ProcessServices:
    """The services of this worker process, built on first use (not at indexing) and reused."""

    def __init__(self, factory: Callable[[], Services] | None = None) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._services: Services | None = None

    def get(self) -> Services:
        with self._lock:
            if self._services is None:
                from shared.logs import protect_existing_handlers

                protect_existing_handlers()
                self._services = (self._factory or _build)()
            return self._services

    def reset(self) -> None:
        with self._lock:
            self._services = None


def _build() -> Services:
    from shared.bootstrap import build_services

    return build_services()


PROCESS_SERVICES = ProcessServices()


def handle_delivery(body: bytes | str, delivery: Delivery, settlement: Settlement = AUTO_COMPLETE) -> Verdict:
    """The trigger's one call: process with this process's services, then settle."""
    try:
        services = PROCESS_SERVICES.get()
    except Exception as exc:  # noqa: BLE001 - without services nothing can be published; redeliver
        code, message, _ = describe_failure(exc)
        log.error("the app could not start; the message will be redelivered",
                  extra={"messageId": delivery.message_id, "deliveryCount": delivery.delivery_count, "code": code})
        verdict = Verdict("redeliver", code=code, reason=message)
    else:
        verdict = process_delivery(body, delivery, services)
    settlement.settle(verdict)
    return verdict
