"""What the Functions host keeps of the app's logs, and how a request's invocations are traced across messages.

The Python worker installs a handler on the root logger and forwards each record's ``getMessage()`` only:
``HostTextHandler`` does the same, installed before the first message as the worker's is.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tests.handlers.conftest import FakeNamespace
from tests.handlers.test_request_trigger import deliver, fixture_body, trigger_message
from tests.support.telemetry import delta, recording

pytestmark = pytest.mark.integration


class HostTextHandler(logging.Handler):
    """Keeps what the worker sends to the host: logger name, level and the message text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.name, record.levelno, record.getMessage()))


@pytest.fixture
def host() -> Iterator[HostTextHandler]:
    root = logging.getLogger()
    handler = HostTextHandler()
    level = root.level
    libraries = {name: logging.getLogger(name).level for name in ("azure", "urllib3", "msal")}
    root.addHandler(handler)
    root.setLevel(logging.INFO)  # as the worker sets it
    for name in libraries:
        logging.getLogger(name).setLevel(logging.NOTSET)  # as a fresh worker process has them
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for name, lib_level in libraries.items():
            logging.getLogger(name).setLevel(lib_level)


def app_lines(host: HostTextHandler) -> list[str]:
    return [text for name, _, text in host.lines if name == "dsr" or name.startswith("dsr.")]


def test_every_app_line_the_host_keeps_names_its_request_and_sdk_chatter_is_gone(
    app_env: dict[str, str], servicebus: FakeNamespace, host: HostTextHandler
) -> None:
    # GIVEN the worker's handler on the root logger, and a valid export request
    body = fixture_body("export-request.json")
    # WHEN the trigger runs it
    deliver(trigger_message(body, message_id="m-1"))
    # THEN the app logged, and each of its lines names the request in the text the host keeps
    lines = app_lines(host)
    assert len(lines) >= 4, lines
    assert all("requestId=TCK-2026-000123" in text for text in lines), lines
    (received,) = [t for t in lines if t.startswith("message received")]
    assert "messageId=m-1" in received and "deliveryCount=1" in received
    (finished,) = [t for t in lines if t.startswith("request finished")]
    assert "status=completed" in finished
    # AND the Azure SDK and HTTP libraries said nothing below WARNING
    chatter = [(n, lvl) for n, lvl, _ in host.lines if n.split(".")[0] in ("azure", "urllib3", "msal")]
    assert all(level >= logging.WARNING for _, level in chatter), chatter[:5]
    assert logging.getLogger("azure").level == logging.WARNING


def test_a_rejected_request_line_carries_its_codes(
    app_env: dict[str, str], servicebus: FakeNamespace, host: HostTextHandler
) -> None:
    deliver(trigger_message(fixture_body("invalid.unknown-field.json")))
    (rejected,) = [t for t in app_lines(host) if t.startswith("request rejected")]
    assert "codes=unknown_field" in rejected
    assert all("requestId=" in text for text in app_lines(host))


def test_a_failure_line_carries_its_error_code(
    app_env: dict[str, str], servicebus: FakeNamespace, host: HostTextHandler, emulator: Any
) -> None:
    # GIVEN Azure ML failing everything
    emulator.configure(faults={"503": 1.0}, retry_after=0)
    # WHEN a request arrives
    with pytest.raises(Exception):
        deliver(trigger_message(fixture_body("export-request.json")))
    # THEN the line that says it will be redelivered names the request and the code
    (line,) = [t for t in app_lines(host) if t.startswith("transient failure")]
    assert "requestId=TCK-2026-000123" in line and "code=azure_ml_unavailable" in line


def test_a_continuation_carries_the_trace_and_the_next_invocation_links_to_it(
    app_env: dict[str, str], servicebus: FakeNamespace, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a time budget far shorter than the export, and telemetry recorded
    monkeypatch.setenv("DSR_TIME_BUDGET_SECONDS", "1")
    monkeypatch.setenv("DSR_CHECKPOINT_SECONDS", "0.2")
    monkeypatch.setenv("DSR_CONCURRENCY", "2")
    emulator.configure(latency_ms=100)
    request = json.loads(fixture_body("export-request.json"))
    del request["resourceKinds"]
    with recording() as memory:
        requests_before = memory.points("dsr.requests")
        # WHEN the first delivery spends its budget and sends a continuation, which is delivered next
        deliver(trigger_message(json.dumps(request).encode()))
        (continuation,) = servicebus.messages("dsr-requests")
        properties = dict(continuation.application_properties)
        deliver(trigger_message(b"".join(continuation.body), message_id=continuation.message_id, properties=properties))
        first, second = [s for s in memory.finished() if s.name == "dsr.request"]
    # THEN the continuation message carries the first invocation's span as a W3C traceparent
    trace_id, span_id = f"{first.context.trace_id:032x}", f"{first.context.span_id:016x}"
    version, carried_trace, carried_span, flags = properties["traceparent"].split("-")
    assert (version, carried_trace, carried_span) == ("00", trace_id, span_id)
    assert int(flags, 16) & 1  # sampled
    # AND the second invocation is its own trace, linked to the first
    assert first.attributes["dsr.outcome"] == "continued"
    assert second.context.trace_id != first.context.trace_id
    assert [(link.context.trace_id, link.context.span_id) for link in second.links] == [
        (first.context.trace_id, first.context.span_id)
    ]
    assert second.attributes["dsr.request_id"] == first.attributes["dsr.request_id"] == "TCK-2026-000123"
    assert second.attributes["messaging.delivery_count"] == 1
    counted = delta(requests_before, memory.points("dsr.requests"))
    assert counted[(("operation", "export"), ("outcome", "continued"))] >= 1
