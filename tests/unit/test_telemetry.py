"""The telemetry hooks without I/O: endpoint families, trace context in message properties, the host text of
a log record, the settings, and that nothing is loaded or exported when no exporter is configured."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

import shared.telemetry as telemetry
from shared.domain.errors import ConfigurationError
from shared.domain.urls import UrlPolicy
from shared.logs import HostMessageFilter, RedactingFilter, request_context
from shared.settings import Settings, load_settings
from tests.support.telemetry import delta, recording

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("url", "family"),
    [
        ("https://management.azure.com/subscriptions/s/resourceGroups/r?api-version=1", "arm"),
        ("https://westeurope.experiments.azureml.net/history/v1.0/x", "experiments"),
        ("https://westeurope.modelmanagement.azureml.net/api/x", "modelmanagement"),
        ("https://eastus2.aether.ms/api/v1.0/x", "aether"),
        ("https://evil.example/arm", "other"),
    ],
)
def test_a_url_is_named_by_its_endpoint_family(url: str, family: str) -> None:
    assert UrlPolicy(Settings().endpoints).family(url) == family


def test_families_that_share_a_host_are_told_apart_by_their_base_path() -> None:
    # GIVEN the emulator's endpoints: one origin, a base path per family
    policy = UrlPolicy({"arm": "http://127.0.0.1:9/arm", "modelmanagement": "http://127.0.0.1:9/mms/{location}"})
    assert policy.family("http://127.0.0.1:9/arm/subscriptions/x") == "arm"
    assert policy.family("http://127.0.0.1:9/mms/westeurope/api/x") == "modelmanagement"
    assert policy.family("http://127.0.0.1:9/armour/x") == "other"


def test_the_sender_span_travels_in_the_message_properties_and_becomes_a_link() -> None:
    with recording() as memory:
        # GIVEN a span that sends a message
        with telemetry.invocation() as sender:
            properties = telemetry.trace_properties()
        # WHEN the receiver's invocation starts from those properties
        with telemetry.invocation({**properties, "dsrContinuation": 1}, delivery_count=2):
            pass
        first, second = memory.finished()
    # THEN it is linked to the sender's span, in a trace of its own
    (link,) = second.links
    assert link.context.span_id == sender.span.get_span_context().span_id
    assert second.context.trace_id != first.context.trace_id
    assert second.attributes["messaging.delivery_count"] == 2


def test_nothing_to_carry_or_link_without_a_span_or_with_a_bad_traceparent() -> None:
    assert telemetry.trace_properties() == {}
    assert telemetry.links_from({"traceparent": "not-a-traceparent"}) == []
    assert telemetry.links_from(None) == []


def test_an_invocation_that_raises_is_counted_as_error_with_its_code_only() -> None:
    class Boom(Exception):
        code = "transient_error"

    with recording() as memory:
        before = memory.points("dsr.requests")
        with pytest.raises(Boom), telemetry.invocation():
            telemetry.describe_request("TCK-9", "export", 1)
            raise Boom("https://h/p?sig=SECRET")
        (span,) = memory.finished()
        assert delta(before, memory.points("dsr.requests")) == {(("operation", "export"), ("outcome", "error")): 1}
    assert span.attributes["dsr.error.code"] == "transient_error"
    assert span.events == ()  # the exception's text (which may hold a URL) is not recorded
    assert "SECRET" not in json.dumps(dict(span.attributes)) + str(span.status.description)


def test_the_deadline_is_due_by_or_thirty_days_after_the_start() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    with recording() as memory:
        before = memory.points("dsr.deadline.seconds")
        with telemetry.invocation():
            telemetry.record_deadline("delete", "2026-01-01T00:00:00Z", now=now)
        with telemetry.invocation():
            telemetry.record_deadline("delete", "2026-01-01T00:00:00Z", "2026-01-03T00:00:00Z", now=now)
        assert delta(before, memory.points("dsr.deadline.seconds")) == {(("operation", "delete"),): 2}
        first, second = memory.finished()
    assert first.attributes["dsr.deadline_seconds"] == 29 * 86400
    assert second.attributes["dsr.deadline_seconds"] == 86400


def record(name: str, msg: str, **extra: object) -> logging.LogRecord:
    made = logging.makeLogRecord({"name": name, "msg": msg, "levelno": logging.INFO, "levelname": "INFO"})
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_the_host_text_names_the_request_and_the_code_once() -> None:
    host = HostMessageFilter()
    with request_context("TCK-7"):
        line = record("dsr.delivery", "transient failure", code="throttled", deliveryCount=3)
        RedactingFilter().filter(line)
        host.filter(line)
        host.filter(line)  # a second handler: appended once
    assert line.getMessage() == "transient failure [requestId=TCK-7 code=throttled deliveryCount=3]"
    # a library's record is left alone
    library = record("azure.core", "Request URL: x")
    host.filter(library)
    assert library.getMessage() == "Request URL: x"


def test_the_host_text_is_redacted_too() -> None:
    line = record("dsr.x", "failed", code="jane@contoso.com")
    HostMessageFilter().filter(line)
    assert "jane@contoso.com" not in line.getMessage()


def test_the_cli_handler_keeps_its_json_lines() -> None:
    from shared.logs import configure_logging, protect_existing_handlers

    # GIVEN the CLI's JSON-line handler, and the worker's filters installed on the root's handlers
    handler = configure_logging("INFO", stream=io.StringIO())
    try:
        protect_existing_handlers()
        # THEN the CLI's handler got no host text filter (its lines have requestId and code as keys)
        assert not any(isinstance(f, HostMessageFilter) for f in handler.filters)
    finally:
        logging.getLogger().removeHandler(handler)
        for other in logging.getLogger().handlers:
            for found in [f for f in other.filters if isinstance(f, HostMessageFilter)]:
                other.removeFilter(found)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://collector", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ("APPLICATIONINSIGHTS_CONNECTION_STRING", "not-a-connection-string", "APPLICATIONINSIGHTS_CONNECTION_STRING"),
    ],
)
def test_a_bad_telemetry_setting_is_named(tmp_path: Path, name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigurationError, match=expected):
        load_settings(environ={name: value}, directory=tmp_path)


def test_telemetry_settings_are_read(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318/",
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
        },
        directory=tmp_path,
    )
    assert settings.otlp_endpoint == "http://localhost:4318"
    assert "InstrumentationKey" not in repr(settings)


def test_without_an_exporter_nothing_of_the_sdk_is_loaded_and_the_hooks_do_nothing() -> None:
    # GIVEN a fresh interpreter without OTEL_EXPORTER_OTLP_ENDPOINT or APPLICATIONINSIGHTS_CONNECTION_STRING
    probe = (
        "import sys, json\n"
        "from shared.bootstrap import start_telemetry\n"
        "from shared.settings import Settings\n"
        "import shared.telemetry as t\n"
        "start_telemetry(Settings())\n"
        "with t.invocation() as inv:\n"
        "    t.describe_request('TCK-1', 'export', 1)\n"
        "    with t.outbound_call('GET', 'arm'):\n"
        "        t.retried('throttled')\n"
        "    props = t.trace_properties()\n"
        "print(json.dumps({'recording': inv.span.is_recording(), 'props': props,\n"
        "    'sdk': sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter',\n"
        "        'azure.monitor', 'shared.adapters.telemetry')))}))\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("OTEL_", "APPLICATIONINSIGHTS_"))}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True, env=env
    )
    # THEN the hooks ran on the API's no-op span, carried nothing, and no SDK or exporter was imported
    assert json.loads(result.stdout) == {"recording": False, "props": {}, "sdk": []}
