"""The optional Event Grid outcome publisher: the same CloudEvent, through a fake whose signature is the SDK's."""

from __future__ import annotations

import inspect
from typing import Any

from azure.core.messaging import CloudEvent
from azure.eventgrid import EventGridPublisherClient

from shared.adapters.eventgrid import EventGridOutcomePublisher
from shared.domain.outcome import outcome_event


class FakeEventGridClient:
    def __init__(
        self, endpoint: str, credential: Any, *, namespace_topic: str | None = None, api_version: str | None = None, **kwargs: Any
    ) -> None:
        self.endpoint = endpoint
        self.sent: list[Any] = []

    def send(self, events: Any, *, channel_name: str | None = None, content_type: str | None = None, **kwargs: Any) -> None:
        self.sent.extend(events)


def _params(func: Any) -> list[str]:
    return [p for p in inspect.signature(func).parameters if p not in ("self", "kwargs")]


def test_the_fake_matches_the_sdk():
    assert _params(FakeEventGridClient.__init__) == _params(EventGridPublisherClient.__init__)
    assert _params(FakeEventGridClient.send) == _params(EventGridPublisherClient.send)


def test_an_outcome_goes_to_the_topic_as_the_same_cloudevent():
    clients: list[FakeEventGridClient] = []

    def factory(endpoint: str, credential: Any) -> FakeEventGridClient:
        clients.append(FakeEventGridClient(endpoint, credential))
        return clients[-1]

    publisher = EventGridOutcomePublisher(
        "https://topic.westeurope-1.eventgrid.azure.net/api/events", credential_factory=lambda: object(), client_factory=factory
    )
    event = outcome_event("TCK-1", "export", "completed", {"counts": {}, "errors": []})
    publisher.publish(event)
    publisher.publish(event)
    assert len(clients) == 1, "one client per process"
    sent = clients[0].sent
    assert len(sent) == 2 and all(isinstance(e, CloudEvent) for e in sent)
    assert (sent[0].id, sent[0].type, sent[0].source, sent[0].subject) == (
        "TCK-1:completed",
        "aml.dsr.export.completed",
        "/aml-dsr",
        "requests/TCK-1",
    )
    assert sent[0].data == event["data"]


def test_the_setting_turns_it_on(monkeypatch, tmp_path):
    from shared.bootstrap import build_services
    from shared.settings import load_settings

    env = {
        "DSR_STORAGE": "UseDevelopmentStorage=true",
        "DSR_EVENTGRID_TOPIC_ENDPOINT": "https://topic.westeurope-1.eventgrid.azure.net/api/events",
    }
    services = build_services(load_settings(env, tmp_path))
    assert [type(p).__name__ for p in services.publishers] == ["EventGridOutcomePublisher"]
