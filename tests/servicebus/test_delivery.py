"""Settlement policy (``shared.service.delivery``) on the real service layer, Azurite and the emulator, with failures
injected through the ports."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from azure.core.exceptions import ServiceRequestError

from shared.bootstrap import ProcessRuntime, Runtime, handle_delivery
from shared.domain.errors import ForbiddenError
from shared.service.delivery import (
    AUTO_COMPLETE,
    Delivery,
    DeliveryFailed,
    Verdict,
    process_delivery,
)
from shared.service.processor import Services
from shared.service.state import StateStore

pytestmark = pytest.mark.integration


class BrokenBundles:
    """A bundle store whose every call fails the way its port's adapter would."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return fail


class RecordingSender:
    """A fake of ``shared.ports.RequestSender``."""

    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, Any], str, dict[str, Any] | None]] = []

    def send_request(
        self, request: dict[str, Any], *, message_id: str, delay_seconds: float = 0.0, properties: dict[str, Any] | None = None
    ) -> None:
        self.sent.append((request, message_id, properties))


class RecordingSettlement:
    """What an explicit settlement (message actions) would receive instead of auto-complete."""

    def __init__(self) -> None:
        self.verdicts: list[Verdict] = []

    def settle(self, verdict: Verdict) -> None:
        self.verdicts.append(verdict)


def with_bundles(services: Services, error: Exception) -> Services:
    return dataclasses.replace(services, bundles=lambda: BrokenBundles(error))


def body_of(request: dict[str, Any]) -> bytes:
    return json.dumps(request).encode()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ServiceRequestError("connection refused by 127.0.0.1:10000 sig=abc"), "azure_service_unavailable"),
        (RuntimeError("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abc leaked"), "internal_error"),
    ],
)
def test_a_storage_or_unexpected_failure_is_redelivered_then_dead_lettered_with_a_clean_event(
    services: Services, publisher: Any, make_request: Callable[..., dict[str, Any]], error: Exception, code: str
) -> None:
    # GIVEN blob storage (or anything) fails with an exception whose text holds secrets
    broken = with_bundles(services, error)
    body = body_of(make_request())
    # WHEN delivered before the last allowed delivery
    verdict = process_delivery(body, Delivery("m1", delivery_count=9), broken)
    # THEN redelivery is asked for, coded, and nothing is published
    assert (verdict.action, verdict.code, verdict.outcome) == ("redeliver", code, None)
    assert publisher.events == []
    with pytest.raises(DeliveryFailed):
        AUTO_COMPLETE.settle(verdict)
    # WHEN delivered the last time (10 = DSR_MAX_DELIVERY_COUNT's default)
    verdict = process_delivery(body, Delivery("m1", delivery_count=10), broken)
    # THEN a failed outcome was published, naming the code and none of the exception's text
    assert verdict.action == "dead_letter"
    (event,) = publisher.events
    assert verdict.outcome == event
    assert event["data"]["errors"] == [
        {"code": code, "message": event["data"]["errors"][0]["message"], "kind": None, "target": None}
    ]
    text = json.dumps(event)
    assert "sig=abc" not in text and "eyJ" not in text and "Traceback" not in text


def test_a_permanent_failure_is_published_as_failed_and_completed(
    services: Services, publisher: Any, make_request: Callable[..., dict[str, Any]]
) -> None:
    # GIVEN a failure that another try cannot cure
    broken = with_bundles(services, ForbiddenError("access denied (HTTP 403)"))
    # WHEN delivered the first time
    verdict = process_delivery(body_of(make_request()), Delivery("m1", delivery_count=1), broken)
    # THEN it is not retried: failed outcome, completed
    assert verdict.action == "complete"
    (event,) = publisher.events
    assert (event["data"]["status"], event["data"]["errors"][0]["code"]) == ("failed", "forbidden")
    AUTO_COMPLETE.settle(verdict)  # returns: the host completes the message


def test_a_request_owned_by_a_live_worker_is_dropped_as_a_duplicate(
    services: Services, publisher: Any, make_request: Callable[..., dict[str, Any]]
) -> None:
    # GIVEN another worker holds a fresh lease on the request
    request = make_request()
    from shared.domain.contract import parse_request

    other = StateStore(services.state().backend, lease_seconds=300, owner="worker-b")
    other.claim(request["requestId"], parse_request(json.dumps(request)).model_dump(mode="json"))
    # WHEN a duplicate delivery arrives, even as the last one
    verdict = process_delivery(body_of(request), Delivery("dup", delivery_count=10), services)
    # THEN it is completed without an outcome: the owner publishes the real one
    assert (verdict.action, verdict.code, publisher.events) == ("complete", "request_in_progress", [])


def test_without_a_request_queue_the_request_runs_to_its_end(
    services: Services, publisher: Any, make_request: Callable[..., dict[str, Any]], emulator: Any
) -> None:
    # GIVEN a budget that slow answers would exceed, but nowhere to send a continuation
    emulator.configure(latency_ms=50)
    tight = dataclasses.replace(services, settings=dataclasses.replace(services.settings, time_budget_seconds=0.01))
    # WHEN processed
    verdict = process_delivery(body_of(make_request(resourceKinds=["workspace", "models"])), Delivery(), tight, None)
    # THEN it finished in this delivery
    assert verdict.action == "complete"
    assert verdict.outcome is not None and verdict.outcome["data"]["status"] == "completed"


def test_settlement_is_replaceable(services: Services, publisher: Any, make_request: Callable[..., dict[str, Any]]) -> None:
    # GIVEN a runtime with a settlement that records instead of raising (as explicit settlement would)
    runtime = ProcessRuntime(lambda: Runtime(with_bundles(services, ServiceRequestError("down")), RecordingSender()))
    settlement = RecordingSettlement()
    import shared.bootstrap as delivery

    saved = delivery.PROCESS_RUNTIME
    delivery.PROCESS_RUNTIME = runtime
    try:
        # WHEN the last delivery fails
        returned = handle_delivery(body_of(make_request()), Delivery("m", delivery_count=10), settlement)
    finally:
        delivery.PROCESS_RUNTIME = saved
    # THEN the settlement got the dead-letter verdict (an explicit one would dead-letter with this reason)
    assert settlement.verdicts == [returned]
    assert (returned.action, returned.code) == ("dead_letter", "azure_service_unavailable")
