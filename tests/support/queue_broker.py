"""The request queue for fan-out tests: what the real ``ServiceBusRequestQueue`` adapter sends through the
signature-checked Service Bus fake is delivered to competing consumers, as a queue would: duplicate
detection on ``message_id``, one consumer per message (peek-lock), redelivery with a higher delivery count
when a consumer asks for it or dies holding the message (its lock lapses)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.adapters.servicebus import ServiceBusRequestQueue, message_body
from shared.service.delivery import Delivery, Verdict, process_delivery
from tests.support.servicebus_fakes import FakeServiceBusClient

NAMESPACE = "dsr-test.servicebus.windows.net"
QUEUE = "dsr-requests"


class Killed(BaseException):
    """A consumer's process dies here (not an Exception: nothing in the app may catch it)."""


@dataclass
class Held:
    message: Any
    delivery_count: int


@dataclass
class Broker:
    client: FakeServiceBusClient = field(default_factory=lambda: FakeServiceBusClient(NAMESPACE, credential=None))
    ready: deque[Held] = field(default_factory=deque)
    verdicts: list[tuple[str, Verdict]] = field(default_factory=list)
    dead: list[Held] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sender = ServiceBusRequestQueue(NAMESPACE, QUEUE, client_factory=lambda: self.client)
        self._lock = threading.Lock()
        self._pulled = 0
        self._ids: set[str] = set()
        self.in_flight = 0

    def _pull(self) -> None:
        sent = self.client.sent[QUEUE]
        for message in sent[self._pulled :]:
            if message.message_id not in self._ids:  # duplicate detection
                self._ids.add(message.message_id)
                self.ready.append(Held(message, 1))
        self._pulled = len(sent)

    def take(self) -> Held | None:
        with self._lock:
            self._pull()
            if not self.ready:
                return None
            self.in_flight += 1
            return self.ready.popleft()

    def settle(self, held: Held, verdict: Verdict) -> None:
        with self._lock:
            self.in_flight -= 1
            self.verdicts.append((held.message.message_id, verdict))
            if verdict.action == "redeliver":
                self.ready.append(Held(held.message, held.delivery_count + 1))
            elif verdict.action == "dead_letter":
                self.dead.append(held)

    def lock_lapsed(self, held: Held) -> None:
        with self._lock:
            self.in_flight -= 1
            self.ready.append(Held(held.message, held.delivery_count + 1))

    def idle(self) -> bool:
        with self._lock:
            self._pull()
            return not self.ready and self.in_flight == 0

    def deliver(self, held: Held, services: Any) -> Verdict:
        props = {(k.decode() if isinstance(k, bytes) else k): v for k, v in (held.message.application_properties or {}).items()}
        delivery = Delivery(message_id=held.message.message_id, delivery_count=held.delivery_count, properties=props)
        return process_delivery(message_body(held.message), delivery, services, self.sender)

    def consume(self, services: Any, *, on_message: Callable[[Held], None] | None = None) -> None:
        """One consumer (a Function instance): take, process, settle, until the queue is drained."""
        while True:
            held = self.take()
            if held is None:
                if self.idle():
                    return
                time.sleep(0.01)
                continue
            try:
                if on_message is not None:
                    on_message(held)
                verdict = self.deliver(held, services)
            except Killed:
                self.lock_lapsed(held)
                return
            self.settle(held, verdict)

    def run(self, consumers: list[Any]) -> None:
        threads = [threading.Thread(target=self.consume, args=(services,), daemon=True) for services in consumers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=240)
            assert not thread.is_alive(), "a consumer did not finish"
