"""The registered Service Bus trigger, called the way the worker calls it: a real
``azure.functions.servicebus.ServiceBusMessage`` in, settlement out (return = complete, raise = redeliver).

Behind it run the real composition root, Azurite and the workspace emulator; only the Service Bus client is
a fake (``shared.adapters.servicebus.connect`` replaced), so outcomes and continuations can be read back.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.functions.servicebus import ServiceBusMessage as TriggerMessage

from shared.domain.outcome import CONTENT_TYPE
from shared.service.delivery import DeliveryFailed
from tests.handlers.conftest import NAMESPACE, FakeNamespace, indexed
from tests.support.bundles import read_bundle

pytestmark = pytest.mark.integration

MESSAGES = Path(__file__).resolve().parents[1] / "fixtures" / "messages"


def fixture_body(name: str) -> bytes:
    return (MESSAGES / name).read_bytes()


def trigger_message(
    body: bytes, *, delivery_count: int = 1, message_id: str | None = None, properties: dict[str, Any] | None = None
) -> TriggerMessage:
    """What the worker builds from the host's delivery."""
    return TriggerMessage(
        body=body,
        message_id=message_id or uuid.uuid4().hex,
        delivery_count=delivery_count,
        enqueued_time_utc=datetime.now(UTC),
        application_properties=properties or {},
        user_properties={},
        content_type="application/json",
        sequence_number=1,
    )


def deliver(message: TriggerMessage) -> None:
    indexed()["dsr_request"].get_user_function()(message)


def test_a_valid_request_is_processed_published_as_a_cloudevent_and_completed(
    app_env: dict[str, str], servicebus: FakeNamespace
) -> None:
    # GIVEN a plain export request on its first delivery
    body = fixture_body("export-request.json")
    # WHEN the trigger runs it
    deliver(trigger_message(body))  # returning normally = the host completes the message
    # THEN exactly one outcome went to the outcome queue, in CloudEvents structured mode
    (message,) = servicebus.messages("dsr-outcomes")
    event = json.loads(b"".join(message.body))
    assert event["type"] == "aml.dsr.export.completed"
    assert event["data"]["requestId"] == "TCK-2026-000123"
    assert message.content_type == CONTENT_TYPE
    assert message.message_id == event["id"] == "TCK-2026-000123:completed"
    assert message.correlation_id == "TCK-2026-000123"
    assert message.subject == event["type"]
    assert message.application_properties == {"type": event["type"], "status": "completed", "operation": "export"}
    # AND one client of the configured namespace was created, and the bundle is in blob storage
    assert [c.fully_qualified_namespace for c in servicebus.clients] == [NAMESPACE]
    manifest, _files = read_bundle(app_env, "TCK-2026-000123")
    assert manifest["status"] == "completed"


@pytest.mark.parametrize(
    ("name", "request_id", "event_type"),
    [
        ("export-request.cloudevent.json", "TCK-2026-000124", "aml.dsr.export.completed"),
        ("export-request.eventgrid.json", "TCK-2026-000125", "aml.dsr.export.completed"),
        ("delete-request.dry-run.json", "TCK-2026-000126", "aml.dsr.delete.completed"),
    ],
)
def test_event_grid_deliveries_and_a_delete_dry_run_complete(
    app_env: dict[str, str], servicebus: FakeNamespace, name: str, request_id: str, event_type: str
) -> None:
    # GIVEN a request as Event Grid delivers it into the queue (CloudEvent or Event Grid schema), or a dry run
    # WHEN the trigger runs it
    deliver(trigger_message(fixture_body(name)))
    # THEN the request inside the envelope was processed, and its outcome published
    (event,) = servicebus.events()
    assert (event["data"]["requestId"], event["type"], event["data"]["status"]) == (request_id, event_type, "completed")


@pytest.mark.parametrize(
    ("name", "request_id", "code"),
    [
        ("invalid.unknown-field.json", "TCK-2026-000127", "unknown_field"),
        ("invalid.hostile-location.json", "TCK-2026-000128", None),
        ("invalid.truncated.json", None, "invalid_json"),
        ("invalid.cloudevent-without-data.json", None, "invalid_envelope"),
    ],
)
def test_an_invalid_request_is_rejected_and_completed(
    app_env: dict[str, str], servicebus: FakeNamespace, emulator: Any, name: str, request_id: str | None, code: str | None
) -> None:
    # GIVEN a message that can never succeed, on its first delivery
    # WHEN the trigger runs it
    deliver(trigger_message(fixture_body(name)))  # no exception: completed, never retried
    # THEN a rejected outcome names each broken rule, and no Azure ML call was made
    (event,) = servicebus.events()
    assert event["data"]["status"] == "rejected"
    assert event["data"]["errors"]
    if code:
        assert code in {e["code"] for e in event["data"]["errors"]}
    if request_id:
        assert event["data"]["requestId"] == request_id
    else:
        assert event["data"]["requestId"].startswith("unreadable-")
    assert not [r for r in emulator.requests() if "/msi/" not in r.get("path", "")]


def test_a_transient_failure_before_the_last_delivery_raises_and_publishes_nothing(
    app_env: dict[str, str], servicebus: FakeNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the managed-identity endpoint refuses tokens (azure-identity raises an AzureError)
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
    # WHEN the trigger runs a valid request on its first of 10 deliveries
    with pytest.raises(DeliveryFailed) as raised:
        deliver(trigger_message(fixture_body("export-request.json"), delivery_count=1))
    # THEN it raised (the host abandons: Service Bus redelivers) with a coded error, and published nothing
    assert raised.value.code == "azure_service_unavailable"
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert servicebus.events() == []


@pytest.mark.parametrize(("max_delivery_count", "delivery_count"), [(None, 10), ("3", 3), ("3", 5)])
def test_a_transient_failure_on_the_last_delivery_publishes_failed_then_raises(
    app_env: dict[str, str],
    servicebus: FakeNamespace,
    emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    max_delivery_count: str | None,
    delivery_count: int,
) -> None:
    # GIVEN token requests fail, and this is the last delivery the queue allows (DSR_MAX_DELIVERY_COUNT, default 10)
    monkeypatch.setenv("IDENTITY_HEADER", "not-the-header")
    if max_delivery_count:
        monkeypatch.setenv("DSR_MAX_DELIVERY_COUNT", max_delivery_count)
    # WHEN the trigger runs the request
    with pytest.raises(DeliveryFailed):
        deliver(trigger_message(fixture_body("export-request.json"), delivery_count=delivery_count))
    # THEN a failed outcome was published first, so the ticket learns of it while the message is dead-lettered
    (message,) = servicebus.messages()
    raw = b"".join(message.body).decode()
    event = json.loads(raw)
    assert (event["type"], event["data"]["requestId"]) == ("aml.dsr.export.failed", "TCK-2026-000123")
    assert [e["code"] for e in event["data"]["errors"]] == ["azure_service_unavailable"]
    # AND the event carries no stack trace, no token, no identity header, no exception text
    for leak in ("Traceback", 'File "', "Bearer", "eyJ", "not-the-header", "X-IDENTITY-HEADER", emulator.identity_header):
        assert leak not in raw


def test_an_outcome_queue_outage_is_redelivered_and_the_redelivery_republishes_the_stored_outcome(
    app_env: dict[str, str], servicebus: FakeNamespace
) -> None:
    # GIVEN the outcome queue fails the next send
    servicebus.send_failures = 1
    body = fixture_body("export-request.json")
    # WHEN the first delivery finishes the export but cannot publish
    with pytest.raises(DeliveryFailed) as raised:
        deliver(trigger_message(body, delivery_count=1))
    assert raised.value.code == "azure_service_unavailable"
    assert servicebus.events() == []
    # AND Service Bus redelivers the message
    deliver(trigger_message(body, delivery_count=2))
    # THEN the redelivery publishes the outcome recorded by the first one (nothing is exported twice)
    (event,) = servicebus.events()
    assert event["id"] == "TCK-2026-000123:completed"


def test_azure_ml_unavailable_for_everything_is_redelivered_then_failed_on_the_last_delivery(
    app_env: dict[str, str], servicebus: FakeNamespace, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN every Azure ML call answers 503 and the HTTP layer tries once
    monkeypatch.setenv("DSR_MAX_ATTEMPTS", "1")
    emulator.configure(faults={"503": 1.0})
    body = fixture_body("export-request.json")
    # WHEN the trigger runs an export on its first delivery
    with pytest.raises(Exception) as first:
        deliver(trigger_message(body, delivery_count=1))
    # THEN nothing is told to the ticket yet: the message goes back to the queue for a later try
    assert "azure_ml_unavailable" in str(first.value) or servicebus.events() == []
    assert servicebus.events() == []
    # AND on the last allowed delivery the ticket learns of it, while the message is dead-lettered
    with pytest.raises(Exception):
        deliver(trigger_message(body, delivery_count=10))
    (event,) = servicebus.events()
    assert event["data"]["status"] == "failed"
    assert event["data"]["errors"][0]["code"] == "azure_ml_unavailable"
    # AND once Azure ML answers again, a redelivery (or a replay) finishes the request
    emulator.configure(faults={})
    deliver(trigger_message(body, delivery_count=1))
    assert [e["data"]["status"] for e in servicebus.events()] == ["failed", "completed"]


def test_a_spent_time_budget_sends_a_continuation_that_finishes_the_request(
    app_env: dict[str, str], servicebus: FakeNamespace, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a time budget far shorter than the export (slow Azure ML answers)
    monkeypatch.setenv("DSR_TIME_BUDGET_SECONDS", "1")
    monkeypatch.setenv("DSR_CHECKPOINT_SECONDS", "0.2")
    monkeypatch.setenv("DSR_CONCURRENCY", "2")  # ~75 calls x 100 ms / 2 threads: several budgets' worth
    emulator.configure(latency_ms=100)
    request = json.loads(fixture_body("export-request.json"))
    del request["resourceKinds"]  # every kind: many calls
    message = trigger_message(json.dumps(request).encode(), message_id="ticket-msg-1")
    # WHEN the trigger runs it, and then every continuation it sent to the request queue
    continuations: list[Any] = []
    for _ in range(40):
        deliver(message)  # each delivery completes
        if servicebus.events():
            break
        sent = servicebus.messages("dsr-requests")
        assert len(sent) == len(continuations) + 1, "a suspended delivery must send exactly one continuation"
        continuations.append(sent[-1])
        message = trigger_message(
            b"".join(sent[-1].body), message_id=sent[-1].message_id, properties=dict(sent[-1].application_properties)
        )
    # THEN at least one continuation was needed, each with a derived id and its number recorded
    assert continuations
    for n, sent_message in enumerate(continuations, start=1):
        assert sent_message.message_id == f"TCK-2026-000123:cont:{n}"
        assert sent_message.application_properties["dsrContinuation"] == n
        assert json.loads(b"".join(sent_message.body))["requestId"] == "TCK-2026-000123"
    assert continuations[0].application_properties["dsrOriginMessageId"] == "ticket-msg-1"
    # AND the request finished with one completed outcome and a trusted bundle
    (event,) = servicebus.events()
    assert event["data"]["status"] == "completed"
    manifest, _files = read_bundle(app_env, "TCK-2026-000123")
    assert manifest["status"] == "completed"


def test_the_delivery_facts_reach_the_logs(
    app_env: dict[str, str], servicebus: FakeNamespace, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dsr")
    deliver(
        trigger_message(
            fixture_body("invalid.unknown-field.json"), delivery_count=4, message_id="m-42", properties={"dsrReplayCount": 1}
        )
    )
    (received,) = [r for r in caplog.records if r.getMessage().startswith("message received")]
    facts = tuple(getattr(received, name) for name in ("messageId", "deliveryCount", "dsrReplayCount"))
    assert facts == ("m-42", 4, 1)


def test_an_app_that_cannot_start_redelivers_and_retries_the_start(
    app_env: dict[str, str], servicebus: FakeNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the storage setting is missing
    monkeypatch.delenv("DSR_STORAGE")
    body = fixture_body("invalid.unknown-field.json")
    # WHEN a message arrives
    with pytest.raises(DeliveryFailed) as raised:
        deliver(trigger_message(body))
    # THEN it is redelivered with the configuration error's code, and nothing was published
    assert raised.value.code == "configuration_error"
    assert servicebus.events() == []
    # AND once the setting is back, the next delivery starts the app and is processed
    monkeypatch.setenv("DSR_STORAGE", app_env["DSR_STORAGE"])
    deliver(trigger_message(body, delivery_count=2))
    assert [e["data"]["status"] for e in servicebus.events()] == ["rejected"]
