"""Fixtures of the trigger tests: the app's real composition root, with a fake Service Bus client behind
``shared.adapters.servicebus.connect`` (the only place a real client would be created)."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.servicebus_fakes import FakeServiceBusClient

NAMESPACE = "dsr-test.servicebus.windows.net"


@functools.cache
def indexed() -> dict[str, Any]:
    """The app's functions, indexed once as the worker does (``get_functions`` may run only once per app)."""
    from function_app import app

    return {str(f.get_function_name()): f for f in app.get_functions()}


class FakeNamespace:
    """Every client the app created, and what it sent to the outcome queue."""

    def __init__(self) -> None:
        self.clients: list[FakeServiceBusClient] = []
        self.send_failures = 0

    def connect(self, namespace: str, credential: Any) -> FakeServiceBusClient:
        client = FakeServiceBusClient(namespace, credential)
        client.send_failures = self.send_failures
        self.clients.append(client)
        return client

    def messages(self, queue: str = "dsr-outcomes") -> list[Any]:
        return [m for client in self.clients for m in client.sent[queue]]

    def events(self, queue: str = "dsr-outcomes") -> list[dict[str, Any]]:
        return [json.loads(b"".join(m.body)) for m in self.messages(queue)]


@pytest.fixture
def servicebus(monkeypatch: pytest.MonkeyPatch) -> FakeNamespace:
    namespace = FakeNamespace()
    monkeypatch.setattr("shared.adapters.servicebus.connect", namespace.connect)
    return namespace


@pytest.fixture
def app_env(dsr_env: dict[str, str], servicebus: FakeNamespace, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The settings of a deployed app (Azurite, the emulator, a Service Bus namespace); a fresh process runtime."""
    from shared.adapters.servicebus import close_shared_clients
    from shared.bootstrap import PROCESS_RUNTIME

    monkeypatch.setenv("ServiceBusConnection__fullyQualifiedNamespace", NAMESPACE)
    monkeypatch.setenv("DSR_REQUEST_QUEUE", "dsr-requests")
    monkeypatch.setenv("DSR_OUTCOME_QUEUE", "dsr-outcomes")
    PROCESS_RUNTIME.reset()
    close_shared_clients()
    yield {**dsr_env, "ServiceBusConnection__fullyQualifiedNamespace": NAMESPACE}
    PROCESS_RUNTIME.reset()
    close_shared_clients()
    # the runtime put the worker's host text filter on the root's handlers (pytest's): take it off again
    from shared.logs import HostMessageFilter

    for handler in logging.getLogger().handlers:
        for found in [f for f in handler.filters if isinstance(f, HostMessageFilter)]:
            handler.removeFilter(found)
