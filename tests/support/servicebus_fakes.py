"""Hand-written fakes of the azure-servicebus client objects the adapters use.

Each public method has exactly the signature of the real SDK method it stands for;
``test_fakes_match_sdk.py`` compares them with ``inspect.signature`` so the fakes cannot drift.
Every call is recorded in one shared ``calls`` log, in order, so tests can assert send-before-complete.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.servicebus import ServiceBusReceiveMode, ServiceBusSubQueue
from azure.servicebus.exceptions import ServiceBusConnectionError

_sequence = itertools.count(1)


@dataclass(eq=False)
class FakeReceivedMessage:
    """Stands for ``azure.servicebus.ServiceBusReceivedMessage`` (only the attributes the adapter reads).

    Like the real one: a data body is an iterator of byte sections, and application properties have
    ``bytes`` keys and ``bytes`` string values.
    """

    body_bytes: bytes
    message_id: str | None = None
    dead_letter_reason: str | None = None
    dead_letter_error_description: str | None = None
    delivery_count: int | None = 10
    enqueued_time_utc: datetime | None = field(default_factory=lambda: datetime.now(UTC))
    application_properties: dict[bytes, Any] | None = None
    content_type: str | None = "application/json"
    correlation_id: str | None = None
    subject: str | None = None
    session_id: str | None = None
    sequence_number: int = field(default_factory=lambda: next(_sequence))

    @property
    def body(self) -> Iterator[bytes]:
        return iter([self.body_bytes[:10], self.body_bytes[10:]])


def received_properties(props: dict[str, Any]) -> dict[bytes, Any]:
    """Application properties as a received message carries them."""
    return {k.encode(): (v.encode() if isinstance(v, str) else v) for k, v in props.items()}


class FakeSender:
    def __init__(self, client: FakeServiceBusClient, queue_name: str) -> None:
        self._client = client
        self.queue_name = queue_name
        self.closed = False

    def send_messages(self, message: Any, *, timeout: float | None = None, **kwargs: Any) -> None:
        assert not self.closed, "send on a closed sender"
        if self._client.send_failures:
            self._client.send_failures -= 1
            self._client.calls.append(("send_failed", self.queue_name, message))
            raise ServiceBusConnectionError(message="the link to the namespace was lost")
        self._client.calls.append(("send", self.queue_name, message))
        self._client.sent[self.queue_name].append(message)

    def close(self) -> None:
        self.closed = True
        self._client.calls.append(("close_sender", self.queue_name, None))


class FakeReceiver:
    def __init__(self, client: FakeServiceBusClient, queue_name: str, sub_queue: Any, receive_mode: Any) -> None:
        self._client = client
        self.queue_name = queue_name
        self.sub_queue = sub_queue
        self.receive_mode = receive_mode
        self.closed = False

    @property
    def _messages(self) -> list[FakeReceivedMessage]:
        assert self.sub_queue == ServiceBusSubQueue.DEAD_LETTER, "only the dead-letter sub-queue is faked"
        return self._client.dead_letters[self.queue_name]

    def peek_messages(
        self, max_message_count: int = 1, *, sequence_number: int = 0, timeout: float | None = None, **kwargs: Any
    ) -> list[FakeReceivedMessage]:
        self._client.calls.append(("peek", self.queue_name, sequence_number))
        start = max(sequence_number, 1)
        ordered = sorted(self._messages, key=lambda m: m.sequence_number)
        return [m for m in ordered if m.sequence_number >= start][:max_message_count]

    def receive_messages(
        self, max_message_count: int | None = 1, max_wait_time: float | None = None
    ) -> list[FakeReceivedMessage]:
        free = [m for m in sorted(self._messages, key=lambda m: m.sequence_number) if id(m) not in self._client.locked]
        batch = free[: max_message_count or 1]
        for message in batch:
            self._client.locked.add(id(message))
        self._client.calls.append(("receive", self.queue_name, [m.sequence_number for m in batch]))
        return batch

    def complete_message(self, message: FakeReceivedMessage) -> None:
        assert id(message) in self._client.locked, "complete without a lock"
        if self._client.complete_failures:
            self._client.complete_failures -= 1
            self._client.locked.discard(id(message))
            self._client.calls.append(("complete_failed", self.queue_name, message.sequence_number))
            raise ServiceBusConnectionError(message="the lock was lost")
        self._client.locked.discard(id(message))
        self._messages.remove(message)
        self._client.calls.append(("complete", self.queue_name, message.sequence_number))

    def abandon_message(self, message: FakeReceivedMessage) -> None:
        assert id(message) in self._client.locked, "abandon without a lock"
        self._client.locked.discard(id(message))
        message.delivery_count = (message.delivery_count or 0) + 1
        self._client.calls.append(("abandon", self.queue_name, message.sequence_number))

    def close(self) -> None:
        self.closed = True


class FakeServiceBusClient:
    """Stands for ``azure.servicebus.ServiceBusClient``: queues are lists, dead letters are seeded by tests."""

    def __init__(
        self,
        fully_qualified_namespace: str,
        credential: Any,
        *,
        retry_total: int = 3,
        retry_backoff_factor: float = 0.8,
        retry_backoff_max: float = 120,
        retry_mode: str = "exponential",
        **kwargs: Any,
    ) -> None:
        self.fully_qualified_namespace = fully_qualified_namespace
        self.credential = credential
        self.calls: list[tuple[str, str, Any]] = []
        self.sent: dict[str, list[Any]] = defaultdict(list)
        self.dead_letters: dict[str, list[FakeReceivedMessage]] = defaultdict(list)
        self.locked: set[int] = set()
        self.senders: list[FakeSender] = []
        self.receivers: list[FakeReceiver] = []
        self.send_failures = 0
        self.complete_failures = 0
        self.closed = False

    def get_queue_sender(
        self, queue_name: str, *, client_identifier: str | None = None, socket_timeout: float | None = None, **kwargs: Any
    ) -> FakeSender:
        sender = FakeSender(self, queue_name)
        self.senders.append(sender)
        return sender

    def get_queue_receiver(
        self,
        queue_name: str,
        *,
        client_identifier: str | None = None,
        socket_timeout: float | None = None,
        session_id: Any = None,
        sub_queue: Any = None,
        receive_mode: Any = ServiceBusReceiveMode.PEEK_LOCK,
        max_wait_time: float | None = None,
        auto_lock_renewer: Any = None,
        prefetch_count: int = 0,
        **kwargs: Any,
    ) -> FakeReceiver:
        receiver = FakeReceiver(self, queue_name, sub_queue, receive_mode)
        self.receivers.append(receiver)
        return receiver

    def close(self) -> None:
        self.closed = True

    def actions(self, *names: str) -> list[tuple[str, Any]]:
        return [(name, detail) for name, _queue, detail in self.calls if not names or name in names]
