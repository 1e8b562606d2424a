"""The registered watchdog timer, called as the worker calls it: stalled requests go back on the request queue."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from azure.functions.timer import TimerRequest

from shared.bootstrap import PROCESS_RUNTIME
from shared.domain.contract import parse_request
from shared.service.state import StateStore
from tests.handlers.conftest import FakeNamespace, indexed

pytestmark = pytest.mark.integration

MESSAGES = Path(__file__).resolve().parents[1] / "fixtures" / "messages"


def test_the_timer_re_enqueues_a_stalled_request_on_the_request_queue(app_env: dict[str, str], servicebus: FakeNamespace) -> None:
    # GIVEN a worker claimed a request ten minutes ago and vanished
    request = parse_request((MESSAGES / "export-request.eventgrid.json").read_bytes())
    backend = PROCESS_RUNTIME.get().services.state().backend
    gone = StateStore(backend, lease_seconds=60, owner="gone", clock=lambda: time.time() - 600)
    gone.claim(request.requestId, request.model_dump(mode="json"))
    # WHEN the timer fires
    indexed()["dsr_watchdog"].get_user_function()(TimerRequest(past_due=False))
    # THEN the request (unwrapped, canonical) is back on the request queue under a derived id
    (message,) = servicebus.messages("dsr-requests")
    assert message.message_id == f"{request.requestId}:requeue:1"
    assert json.loads(b"".join(message.body))["requestId"] == "TCK-2026-000125"
    assert message.application_properties == {"dsrRequeue": 1}
    # AND the trigger can run it (the request's canonical JSON is a valid request message)
    assert parse_request(b"".join(message.body)).requestId == request.requestId


def test_without_a_namespace_the_timer_does_nothing(dsr_env: dict[str, str], servicebus: FakeNamespace) -> None:
    PROCESS_RUNTIME.reset()
    try:
        indexed()["dsr_watchdog"].get_user_function()(TimerRequest(past_due=True))
    finally:
        PROCESS_RUNTIME.reset()
    assert servicebus.clients == []
