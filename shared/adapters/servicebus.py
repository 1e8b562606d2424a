"""Service Bus adapters (azure-servicebus): the outcome publisher, the request queue (continuations,
requeues) and the request queue's dead letters.

One ``ServiceBusClient`` per namespace and process, created on first use from the managed-identity
credential and shared by the outcome publisher and the request queue; each queue's sender is reused.
Tests pass ``client_factory`` (a fake client whose methods are checked against these SDK signatures) or
replace ``connect``, so no test needs a network.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusReceiveMode, ServiceBusSubQueue

import shared.telemetry as telemetry
from shared.domain.deadletter import DeadLetter, ReplayPlan, ReplayResult, request_id_of, text_properties
from shared.domain.outcome import CONTENT_TYPE

log = logging.getLogger("dsr.servicebus")

RECEIVE_BATCH = 50
PEEK_BATCH = 100


def connect(namespace: str, credential: Any) -> ServiceBusClient:
    return ServiceBusClient(namespace, credential)


_SHARED: dict[str, Any] = {}
_SHARED_LOCK = threading.Lock()


def shared_client(namespace: str, credential_factory: Callable[[], Any]) -> Any:
    """The process's one client of a namespace (the outcome publisher and the request queue share it)."""
    with _SHARED_LOCK:
        if namespace not in _SHARED:
            _SHARED[namespace] = connect(namespace, credential_factory())
        return _SHARED[namespace]


def close_shared_clients() -> None:
    with _SHARED_LOCK:
        clients = list(_SHARED.values())
        _SHARED.clear()
    for client in clients:
        client.close()


class _Client:
    """The lazily obtained client of one namespace: the shared one, or one from ``client_factory``."""

    def __init__(
        self,
        namespace: str,
        credential_factory: Callable[[], Any] | None,
        client_factory: Callable[[], Any] | None,
        *,
        shared: bool = True,
    ) -> None:
        if client_factory is None and credential_factory is None:
            raise ValueError("a credential_factory (or a client_factory) is required")
        self.namespace = namespace
        self._credential_factory = credential_factory
        self._client_factory = client_factory
        self._own = client_factory is not None or not shared
        self._client: Any = None

    def get(self) -> Any:
        if self._client is None:
            if self._client_factory is not None:
                self._client = self._client_factory()
            else:
                assert self._credential_factory is not None
                self._client = (
                    connect(self.namespace, self._credential_factory())
                    if self._own
                    else shared_client(self.namespace, self._credential_factory)
                )
        return self._client

    def close(self) -> None:
        """Closes an own client; the shared one lives as long as the process (``close_shared_clients``)."""
        if self._client is not None and self._own:
            self._client.close()
        self._client = None


class _Sender:
    """One reused sender of a queue; a sender is not thread-safe, and the worker may run invocations in threads."""

    def __init__(self, client: _Client, queue: str) -> None:
        self._client = client
        self.queue = queue
        self._sender: Any = None
        self._lock = threading.Lock()

    def send(self, message: ServiceBusMessage) -> None:
        with self._lock:
            if self._sender is None:
                self._sender = self._client.get().get_queue_sender(self.queue)
            try:
                self._sender.send_messages(message)
            except Exception:
                self._discard()  # a broken link must not poison every later send
                raise

    def _discard(self) -> None:
        sender, self._sender = self._sender, None
        try:
            sender.close()
        except Exception as exc:  # noqa: BLE001 - closing a broken sender may fail too
            log.debug("closing a failed sender failed", extra={"error": type(exc).__name__})

    def close(self) -> None:
        with self._lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None


def outcome_message(event: dict[str, Any]) -> ServiceBusMessage:
    """CloudEvents structured mode: the body is the event; broker properties mirror it for routing."""
    data = event.get("data") or {}
    properties: dict[str | bytes, Any] = {"type": event["type"], "status": data.get("status")}
    if data.get("operation"):
        properties["operation"] = data["operation"]
    return ServiceBusMessage(
        json.dumps(event, ensure_ascii=False),
        content_type=CONTENT_TYPE,
        message_id=event["id"],
        correlation_id=data.get("requestId"),
        subject=event["type"],
        application_properties=properties,
    )


class _QueueSender:
    """One queue's sender on the namespace's client, built on first use; ``close`` ends both."""

    def __init__(
        self,
        namespace: str,
        queue: str,
        *,
        credential_factory: Callable[[], Any] | None = None,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.queue = queue
        self._client = _Client(namespace, credential_factory, client_factory)
        self._sender = _Sender(self._client, queue)

    def close(self) -> None:
        self._sender.close()
        self._client.close()


class ServiceBusOutcomePublisher(_QueueSender):
    """Implements ``shared.ports.OutcomePublisher`` on the outcome queue."""

    def publish(self, event: dict[str, Any]) -> None:
        self._sender.send(outcome_message(event))
        log.info("outcome published", extra={"eventId": event["id"], "queue": self.queue})


class ServiceBusRequestQueue(_QueueSender):
    """Implements ``shared.ports.RequestSender``: continuations and watchdog re-enqueues of a request."""

    def send_request(
        self, request: dict[str, Any], *, message_id: str, delay_seconds: float = 0.0, properties: dict[str, Any] | None = None
    ) -> None:
        # the sender's span travels with the message: the receiving invocation links to it
        props: dict[str | bytes, Any] = {}
        props.update(telemetry.trace_properties())
        props.update((properties or {}).items())
        when = datetime.now(UTC) + timedelta(seconds=delay_seconds) if delay_seconds > 0 else None
        self._sender.send(
            ServiceBusMessage(
                json.dumps(request, ensure_ascii=False),
                message_id=message_id,
                content_type="application/json",
                application_properties=props,
                scheduled_enqueue_time_utc=when,
            )
        )


def message_body(message: Any) -> bytes:
    """The body of a received message as bytes (a data body arrives as one or more byte sections)."""
    body = message.body
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (dict, list, int, float, bool)) or body is None:
        return json.dumps(body).encode("utf-8")
    return b"".join(
        bytes(section) if isinstance(section, (bytes, bytearray)) else str(section).encode("utf-8") for section in body
    )


def dead_letter_of(message: Any) -> DeadLetter:
    body = message_body(message)
    return DeadLetter(
        sequence_number=int(message.sequence_number),
        message_id=message.message_id,
        request_id=request_id_of(body),
        reason=message.dead_letter_reason,
        description=message.dead_letter_error_description,
        delivery_count=message.delivery_count,
        enqueued_time=message.enqueued_time_utc,
        properties=text_properties(message.application_properties),
    )


def replay_message(message: Any, plan: ReplayPlan) -> ServiceBusMessage:
    """A fresh copy of a dead letter for the request queue, with the replay recorded in its properties."""
    assert plan.new_message_id
    properties: dict[str | bytes, Any] = dict(text_properties(message.application_properties).items())
    properties.update(plan.properties.items())
    return ServiceBusMessage(
        message_body(message),
        application_properties=properties,
        message_id=plan.new_message_id,
        content_type=message.content_type,
        correlation_id=message.correlation_id,
        subject=message.subject,
        session_id=message.session_id,
    )


class ServiceBusDeadLetters:
    """Implements ``shared.ports.DeadLetterStore`` on the dead-letter sub-queue of the request queue."""

    def __init__(
        self,
        namespace: str,
        queue: str,
        *,
        credential_factory: Callable[[], Any] | None = None,
        client_factory: Callable[[], Any] | None = None,
        max_wait_time: float = 5.0,
    ) -> None:
        self.queue = queue
        self._client = _Client(namespace, credential_factory, client_factory, shared=False)  # a short-lived ops tool
        self._max_wait_time = max_wait_time

    def _receiver(self, mode: ServiceBusReceiveMode) -> Any:
        return self._client.get().get_queue_receiver(
            self.queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER, receive_mode=mode, max_wait_time=self._max_wait_time
        )

    def peek(self, limit: int) -> list[DeadLetter]:
        """Browse without locking: nothing is settled, delivery counts do not move."""
        letters: list[DeadLetter] = []
        receiver = self._receiver(ServiceBusReceiveMode.PEEK_LOCK)
        try:
            next_sequence = 0
            while len(letters) < limit:
                batch = receiver.peek_messages(
                    max_message_count=min(PEEK_BATCH, limit - len(letters)), sequence_number=next_sequence
                )
                if not batch:
                    break
                letters.extend(dead_letter_of(m) for m in batch)
                next_sequence = max(int(m.sequence_number) for m in batch) + 1
        finally:
            receiver.close()
        return letters

    def replay(self, plans: Sequence[ReplayPlan]) -> list[ReplayResult]:
        """Lock the planned dead letters; for each, send the copy first, then complete the dead letter.

        Dead letters received but not planned stay locked until the end and are then abandoned, so the
        search does not receive them again; a planned one that never shows up (settled by someone else
        meanwhile) is reported ``not_found``.
        """
        wanted = {p.letter.sequence_number: p for p in plans if p.action == "replay"}
        results: list[ReplayResult] = []
        held: list[Any] = []
        receiver = self._receiver(ServiceBusReceiveMode.PEEK_LOCK)
        sender = self._client.get().get_queue_sender(self.queue)
        try:
            while wanted:
                batch = receiver.receive_messages(max_message_count=RECEIVE_BATCH, max_wait_time=self._max_wait_time)
                if not batch:
                    break
                for message in batch:
                    plan = wanted.pop(int(message.sequence_number), None)
                    if plan is None:
                        held.append(message)
                    else:
                        results.append(self._replay_one(receiver, sender, message, plan))
        finally:
            for message in held:
                _quietly(receiver.abandon_message, message)
            sender.close()
            receiver.close()
        results += [ReplayResult(p, "not_found", "no longer in the dead-letter queue") for p in wanted.values()]
        return results

    def _replay_one(self, receiver: Any, sender: Any, message: Any, plan: ReplayPlan) -> ReplayResult:
        try:
            sender.send_messages(replay_message(message, plan))
        except Exception as exc:  # noqa: BLE001 - reported per message; the dead letter stays where it is
            _quietly(receiver.abandon_message, message)
            return ReplayResult(plan, "failed", f"resending failed ({type(exc).__name__}); the dead letter is kept")
        try:
            receiver.complete_message(message)
        except Exception as exc:  # noqa: BLE001 - the copy is on the queue; a second replay reuses its id
            return ReplayResult(
                plan,
                "resent_not_completed",
                f"resent, but completing the dead letter failed ({type(exc).__name__}); "
                "replaying it again reuses the same message id",
            )
        log.info(
            "dead letter replayed",
            extra={"messageId": plan.letter.message_id, "newMessageId": plan.new_message_id, "requestId": plan.letter.request_id},
        )
        return ReplayResult(plan, "replayed")

    def close(self) -> None:
        self._client.close()


def _quietly(action: Callable[[Any], None], message: Any) -> None:
    try:
        action(message)
    except Exception as exc:  # noqa: BLE001 - an expired lock releases the message anyway
        log.debug("settling a dead letter failed", extra={"error": type(exc).__name__})
