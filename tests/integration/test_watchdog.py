"""The watchdog re-enqueues stalled requests a bounded number of times, then fails them with an outcome."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from shared.domain.contract import parse_request
from shared.service.state import StateStore
from shared.service.watchdog import sweep

pytestmark = pytest.mark.integration


class RecordingSender:
    """A fake of shared.ports.RequestSender."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_request(
        self, request: dict[str, Any], *, message_id: str, delay_seconds: float = 0.0, properties: dict[str, Any] | None = None
    ) -> None:
        self.sent.append({"request": request, "message_id": message_id, "properties": properties})


def test_a_stalled_request_is_requeued_then_failed(services, make_request, publisher, monkeypatch):
    body = make_request(resourceKinds=["models"])
    request = parse_request(json.dumps(body))
    # GIVEN a worker that claimed the request 10 minutes ago and vanished
    past = StateStore(services.state().backend, lease_seconds=60, owner="gone", clock=lambda: time.time() - 600)
    past.claim(request.requestId, request.model_dump(mode="json"))
    # AND a finished request, which the watchdog must leave alone
    done = make_request(resourceKinds=["models"])
    from shared.service.processor import handle

    handle(json.dumps(done), services)
    publisher.events.clear()
    sender = RecordingSender()
    max_requeues = services.settings.watchdog_max_requeues
    # WHEN the watchdog runs once per (simulated) stall
    for n in range(1, max_requeues + 1):
        assert sweep(services, sender) == {"requeued": 1, "failed": 0}
        assert sender.sent[-1]["message_id"] == f"{request.requestId}:requeue:{n}"
        # the requeue counts as activity: it must look stalled again before the next pass
        found = services.state().backend.read(request.requestId)
        assert found is not None
        doc, etag = found
        services.state().backend.replace(request.requestId, {**doc, "updatedAt": "2000-01-01T00:00:00Z"}, etag)
    assert sender.sent[0]["request"]["requestId"] == request.requestId
    assert publisher.events == []
    # THEN after the last allowed requeue it is failed, with a published outcome
    assert sweep(services, sender) == {"requeued": 0, "failed": 1}
    [event] = publisher.events
    assert event["type"] == "aml.dsr.export.failed" and event["data"]["errors"][0]["code"] == "stalled"
    found = services.state().backend.read(request.requestId)
    assert found is not None and found[0]["status"] == "failed"
    assert sweep(services, sender) == {"requeued": 0, "failed": 0}


def test_a_recent_or_leased_request_is_left_alone(services, make_request):
    body = make_request(resourceKinds=["models"])
    request = parse_request(json.dumps(body))
    services.state().claim(request.requestId, request.model_dump(mode="json"))
    sender = RecordingSender()
    assert sweep(services, sender) == {"requeued": 0, "failed": 0}
    assert sender.sent == []
