"""Optional: each outcome also published to an Event Grid topic (azure-eventgrid), as the same CloudEvent."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class EventGridOutcomePublisher:
    """Implements ``shared.ports.OutcomePublisher``; one client per process, created on first use."""

    def __init__(
        self, endpoint: str, *, credential_factory: Callable[[], Any], client_factory: Callable[[str, Any], Any] | None = None
    ) -> None:
        self._endpoint = endpoint
        self._credential_factory = credential_factory
        self._client_factory = client_factory
        self._client: Any = None
        self._lock = threading.Lock()

    def _get_client(self) -> Any:
        with self._lock:
            if self._client is None:
                factory = self._client_factory
                if factory is None:
                    from azure.eventgrid import EventGridPublisherClient

                    factory = EventGridPublisherClient
                self._client = factory(self._endpoint, self._credential_factory())
            return self._client

    def publish(self, event: dict[str, Any]) -> None:
        from azure.core.messaging import CloudEvent

        self._get_client().send([CloudEvent.from_dict(dict(event))])
