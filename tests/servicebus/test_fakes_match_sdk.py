"""The Service Bus fakes have the real SDK's method signatures, and carry only attributes the real objects have."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import azure.functions.servicebus as func_servicebus
import pytest
from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceivedMessage, ServiceBusReceiver, ServiceBusSender

from tests.support.servicebus_fakes import FakeReceivedMessage, FakeReceiver, FakeSender, FakeServiceBusClient


def shape(function: Any) -> list[tuple[str, Any, Any]]:
    """Parameter names, kinds and defaults (annotations are the SDK's business)."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize(
    ("fake", "real"),
    [
        (FakeServiceBusClient.__init__, ServiceBusClient.__init__),
        (FakeServiceBusClient.get_queue_sender, ServiceBusClient.get_queue_sender),
        (FakeServiceBusClient.get_queue_receiver, ServiceBusClient.get_queue_receiver),
        (FakeServiceBusClient.close, ServiceBusClient.close),
        (FakeSender.send_messages, ServiceBusSender.send_messages),
        (FakeSender.close, ServiceBusSender.close),
        (FakeReceiver.peek_messages, ServiceBusReceiver.peek_messages),
        (FakeReceiver.receive_messages, ServiceBusReceiver.receive_messages),
        (FakeReceiver.complete_message, ServiceBusReceiver.complete_message),
        (FakeReceiver.abandon_message, ServiceBusReceiver.abandon_message),
        (FakeReceiver.close, ServiceBusReceiver.close),
    ],
    ids=lambda f: getattr(f, "__qualname__", str(f)),
)
def test_fake_method_has_the_sdk_signature(fake: Any, real: Any) -> None:
    # GIVEN a fake method and the azure-servicebus method it stands for
    # WHEN their signatures are compared
    # THEN names, kinds and defaults are identical: an SDK upgrade that changes them fails here first
    assert shape(fake) == shape(real)


def test_fake_received_message_only_has_attributes_of_the_real_one() -> None:
    # GIVEN the attributes the fake received message offers the adapter
    offered = {f.name for f in dataclasses.fields(FakeReceivedMessage) if f.name != "body_bytes"} | {"body"}
    # THEN every one of them exists on azure.servicebus.ServiceBusReceivedMessage
    missing = sorted(name for name in offered if not hasattr(ServiceBusReceivedMessage, name))
    assert missing == []


def test_outgoing_message_keywords_exist_on_the_sdk_message() -> None:
    # GIVEN the keywords the adapter passes to azure.servicebus.ServiceBusMessage
    used = {"application_properties", "message_id", "content_type", "correlation_id", "subject", "session_id"}
    # THEN the real constructor takes each of them by keyword, after the positional body
    parameters = inspect.signature(ServiceBusMessage.__init__).parameters
    assert list(parameters)[:2] == ["self", "body"]
    assert all(parameters[name].kind is inspect.Parameter.KEYWORD_ONLY for name in used)


def test_the_trigger_message_facts_exist_on_the_functions_message() -> None:
    # GIVEN the delivery facts the handler reads from azure.functions.ServiceBusMessage
    read = ["get_body", "message_id", "delivery_count", "enqueued_time_utc", "application_properties"]
    # THEN the worker's message class offers them
    assert all(hasattr(func_servicebus.ServiceBusMessage, name) for name in read)
