"""The Service Bus adapters that send: the outcome publisher and the request queue (continuations, requeues)."""

from __future__ import annotations

import inspect
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.servicebus import ServiceBusMessage
from azure.servicebus.exceptions import ServiceBusConnectionError

from shared.adapters import servicebus as adapter
from shared.adapters.servicebus import ServiceBusOutcomePublisher, ServiceBusRequestQueue
from shared.domain.outcome import CONTENT_TYPE, outcome_event
from shared.ports import OutcomePublisher, RequestSender
from tests.support.servicebus_fakes import FakeServiceBusClient


def event(request_id: str = "TCK-1", operation: str | None = "export", status: str = "completed") -> dict[str, Any]:
    return outcome_event(request_id, operation, status, {"counts": {}, "errors": []})


class Factory:
    def __init__(self) -> None:
        self.clients: list[FakeServiceBusClient] = []

    def __call__(self) -> FakeServiceBusClient:
        self.clients.append(FakeServiceBusClient("ns.servicebus.windows.net", credential=None))
        return self.clients[-1]


def test_the_client_is_created_on_the_first_publish_and_the_sender_is_reused() -> None:
    # GIVEN a publisher (built at start-up, before any message)
    factory = Factory()
    publisher = ServiceBusOutcomePublisher("ns.servicebus.windows.net", "dsr-outcomes", client_factory=factory)
    # THEN no client exists yet
    assert factory.clients == []
    # WHEN two outcomes are published
    publisher.publish(event("TCK-1"))
    publisher.publish(event("TCK-2"))
    # THEN one client and one sender carried both, to the outcome queue
    (client,) = factory.clients
    assert len(client.senders) == 1 and client.senders[0].queue_name == "dsr-outcomes"
    assert [m.message_id for m in client.sent["dsr-outcomes"]] == ["TCK-1:completed", "TCK-2:completed"]
    publisher.close()
    assert client.senders[0].closed and client.closed


def test_an_outcome_is_a_structured_cloudevent_with_routing_properties() -> None:
    factory = Factory()
    publisher = ServiceBusOutcomePublisher("ns", "dsr-outcomes", client_factory=factory)
    # WHEN a delete outcome is published
    published = event("TCK-9", "delete", "partially_completed")
    publisher.publish(published)
    (message,) = factory.clients[0].sent["dsr-outcomes"]
    # THEN it is a real SDK message whose body is the event itself
    assert isinstance(message, ServiceBusMessage)
    assert json.loads(str(message)) == published
    assert message.content_type == CONTENT_TYPE == "application/cloudevents+json; charset=utf-8"
    # AND the broker properties let duplicate detection and subscription filters work without reading the body
    assert message.message_id == "TCK-9:partially_completed"
    assert message.correlation_id == "TCK-9"
    assert message.subject == "aml.dsr.delete.partially_completed"
    assert message.application_properties == {
        "type": "aml.dsr.delete.partially_completed",
        "status": "partially_completed",
        "operation": "delete",
    }


def test_a_rejection_without_an_operation_has_no_operation_property() -> None:
    factory = Factory()
    ServiceBusOutcomePublisher("ns", "q", client_factory=factory).publish(event("unreadable-0123", None, "rejected"))
    (message,) = factory.clients[0].sent["q"]
    assert message.application_properties == {"type": "aml.dsr.request.rejected", "status": "rejected"}


def test_a_failed_send_raises_and_the_next_publish_uses_a_fresh_sender() -> None:
    # GIVEN the link breaks on the next send
    factory = Factory()
    publisher = ServiceBusOutcomePublisher("ns", "q", client_factory=factory)
    publisher.publish(event("TCK-1"))
    factory.clients[0].send_failures = 1
    # WHEN an outcome is published
    with pytest.raises(ServiceBusConnectionError):
        publisher.publish(event("TCK-2"))
    # THEN the broken sender was closed, and the next publish opens a new one on the same client
    publisher.publish(event("TCK-3"))
    client = factory.clients[0]
    assert [s.closed for s in client.senders] == [True, False]
    assert [m.message_id for m in client.sent["q"]] == ["TCK-1:completed", "TCK-3:completed"]


def test_concurrent_invocations_share_one_sender_safely() -> None:
    factory = Factory()
    publisher = ServiceBusOutcomePublisher("ns", "q", client_factory=factory)
    threads = [threading.Thread(target=publisher.publish, args=(event(f"TCK-{i}"),)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(factory.clients) == 1 and len(factory.clients[0].senders) == 1
    assert len(factory.clients[0].sent["q"]) == 16


def test_without_a_factory_one_shared_client_per_namespace_is_built_from_the_credential(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the real connect() replaced, and a credential factory like bootstrap's
    made: list[tuple[str, Any]] = []

    def connect(namespace: str, credential: Any) -> FakeServiceBusClient:
        made.append((namespace, credential))
        return FakeServiceBusClient(namespace, credential)

    monkeypatch.setattr(adapter, "connect", connect)
    adapter.close_shared_clients()
    credential = object()
    calls: list[int] = []

    def credential_factory() -> object:
        calls.append(1)
        return credential

    publisher = ServiceBusOutcomePublisher("ns.servicebus.windows.net", "dsr-outcomes", credential_factory=credential_factory)
    requests = ServiceBusRequestQueue("ns.servicebus.windows.net", "dsr-requests", credential_factory=credential_factory)
    assert calls == []  # lazy: nothing at construction
    # WHEN both send
    publisher.publish(event())
    requests.send_request({"requestId": "TCK-1"}, message_id="TCK-1:cont:1", properties={"dsrContinuation": 1})
    # THEN one client of that namespace, with the credential, serves both
    assert made == [("ns.servicebus.windows.net", credential)]
    adapter.close_shared_clients()


def test_a_continuation_is_the_request_with_a_derived_id_and_its_number() -> None:
    factory = Factory()
    queue = ServiceBusRequestQueue("ns", "dsr-requests", client_factory=factory)
    queue.send_request({"requestId": "TCK-1"}, message_id="TCK-1:cont:2", properties={"dsrContinuation": 2})
    (message,) = factory.clients[0].sent["dsr-requests"]
    assert json.loads(str(message)) == {"requestId": "TCK-1"}
    assert message.message_id == "TCK-1:cont:2"
    assert message.application_properties == {"dsrContinuation": 2}
    assert message.content_type == "application/json"
    assert message.scheduled_enqueue_time_utc is None


def test_a_delayed_request_is_scheduled() -> None:
    factory = Factory()
    before = datetime.now(UTC)
    ServiceBusRequestQueue("ns", "q", client_factory=factory).send_request(
        {"requestId": "TCK-1"}, message_id="x", delay_seconds=90
    )
    (message,) = factory.clients[0].sent["q"]
    assert message.scheduled_enqueue_time_utc is not None
    assert timedelta(seconds=89) < message.scheduled_enqueue_time_utc - before < timedelta(seconds=95)


def test_the_request_queue_implements_the_request_sender_port() -> None:
    # GIVEN the service layer's port and the adapter
    def shape(function: Any) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]

    # THEN the adapter's method has exactly the port's parameters
    assert shape(ServiceBusRequestQueue.send_request) == shape(RequestSender.send_request)
    assert shape(ServiceBusOutcomePublisher.publish) == shape(OutcomePublisher.publish)


def test_an_adapter_needs_a_way_to_connect() -> None:
    with pytest.raises(ValueError, match="credential_factory"):
        ServiceBusOutcomePublisher("ns", "q")
