"""Traces and metrics of real requests (Azurite, the workspace emulator), read from the OpenTelemetry SDK's
own in-memory exporters (``tests.support.telemetry``): the spans exist with their attributes, the metrics
count what happened, and nothing exported holds a token, a secret or the subject's identifiers."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from shared.service.processor import handle
from tests.security.test_no_leaks import forbidden_values, run_export_and_delete
from tests.support.bundles import DEMO_TARGET
from tests.support.telemetry import delta, recording

pytestmark = pytest.mark.integration


def by_name(spans: list[Any], name: str) -> list[Any]:
    return [s for s in spans if s.name == name]


def test_an_export_is_one_trace_of_request_workspace_and_call_spans(services: Any, make_request: Any) -> None:
    # GIVEN telemetry recorded in memory
    with recording() as memory:
        requests_before = memory.points("dsr.requests")
        items_before = memory.points("dsr.items")
        calls_before = memory.points("dsr.calls")
        deadline_before = memory.points("dsr.deadline.seconds")
        # WHEN an export of one workspace runs to its end
        body = make_request(resourceKinds=["models", "runs", "experiments"])
        event = handle(json.dumps(body), services)
        spans = memory.finished()
        # THEN the request has one dsr.request span naming it, its operation, attempt and workspace count
        assert event["data"]["status"] == "completed"
        (request,) = by_name(spans, "dsr.request")
        assert request.attributes["dsr.request_id"] == body["requestId"]
        assert request.attributes["dsr.operation"] == "export"
        assert request.attributes["dsr.workspaces"] == 1
        assert request.attributes["dsr.attempt"] == 1
        assert request.attributes["dsr.outcome"] == "completed"
        assert request.parent is None
        # AND one workspace span under it, with the workspace's name and location only
        (workspace,) = by_name(spans, "dsr.workspace")
        assert workspace.parent.span_id == request.context.span_id
        assert dict(workspace.attributes) == {"dsr.workspace": DEMO_TARGET["workspace"], "dsr.location": DEMO_TARGET["location"]}
        # AND one client span per outbound call under the workspace, named by its endpoint family
        calls = [s for s in spans if s.kind == SpanKind.CLIENT]
        assert {s.name for s in calls} == {"GET arm", "GET experiments", "GET modelmanagement"}
        assert all(s.parent.span_id == workspace.context.span_id for s in calls)
        assert all(s.attributes["http.response.status_code"] == 200 for s in calls)
        # AND all of it is one trace
        assert {s.context.trace_id for s in spans} == {request.context.trace_id}
        # AND the metrics counted the request, its items, its calls and its deadline
        assert delta(requests_before, memory.points("dsr.requests")) == {(("operation", "export"), ("outcome", "completed")): 1}
        items = delta(items_before, memory.points("dsr.items"))
        counts = event["data"]["counts"][next(iter(event["data"]["counts"]))]
        for kind in ("models", "runs", "experiments"):
            assert items[(("kind", kind), ("operation", "export"), ("result", "exported"))] == counts[kind] > 0
        called = delta(calls_before, memory.points("dsr.calls"))
        assert sum(called.values()) == len(calls)
        assert delta(deadline_before, memory.points("dsr.deadline.seconds")) == {(("operation", "export"),): 1}


def test_throttling_and_retries_are_counted_by_family(services: Any, make_request: Any, emulator: Any) -> None:
    # GIVEN an Azure ML that throttles and fails now and then
    emulator.configure(faults={"429": 0.2, "503": 0.1}, retry_after=0, seed=5)
    with recording() as memory:
        throttled_before = memory.points("dsr.throttled")
        retries_before = memory.points("dsr.retries")
        # WHEN an export runs through it
        event = handle(json.dumps(make_request()), services)
        # THEN it finished, and the 429s and retries were counted per endpoint family
        assert event["data"]["status"] == "completed", event["data"]["errors"]
        throttled = delta(throttled_before, memory.points("dsr.throttled"))
        retries = delta(retries_before, memory.points("dsr.retries"))
        assert any(dict(key)["http.response.status_code"] == 429 for key in throttled)
        assert sum(retries.values()) >= sum(throttled.values()) > 0
        assert {dict(key)["dsr.family"] for key in retries} <= {"arm", "experiments", "modelmanagement", "aether"}
        # AND a retried call's span says how many attempts it took
        attempts = [s.attributes["dsr.attempts"] for s in memory.finished() if s.kind == SpanKind.CLIENT]
        assert max(attempts) > 1


def test_a_delete_counts_items_by_result_and_traces_deletes(services: Any, make_request: Any) -> None:
    with recording() as memory:
        items_before = memory.points("dsr.items")
        event = handle(json.dumps(make_request(operation="delete", resourceKinds=["models"])), services)
        assert event["data"]["status"] == "completed", event["data"]["errors"]
        items = delta(items_before, memory.points("dsr.items"))
        planned = items[(("kind", "models"), ("operation", "delete"), ("result", "planned"))]
        assert planned > 0
        assert items[(("kind", "models"), ("operation", "delete"), ("result", "verified"))] == planned
        spans = memory.finished()
        (workspace,) = by_name(spans, "dsr.workspace")
        deletes = [s for s in spans if s.name == "DELETE modelmanagement"]
        assert len(deletes) == planned
        # the plan's listing, the DELETEs and the read-backs all hang off the workspace span
        assert all(s.parent.span_id == workspace.context.span_id for s in spans if s.kind == SpanKind.CLIENT)


def test_no_exported_span_or_log_record_holds_a_secret_or_the_subjects_identifiers(
    services: Any, dsr_env: dict[str, str], emulator: Any, make_request: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN the app's loggers at DEBUG, exported with the spans
    caplog.set_level(logging.DEBUG, logger="dsr")
    # WHEN a subject export, a full export and a subject delete with a workspace purge run (the leak test's run)
    with recording() as memory:
        run_export_and_delete(services, make_request)
        spans = memory.finished()
        records = memory.log_records()
    # THEN spans and log records were exported
    assert len(spans) > 50 and len(records) > 5
    # AND no attribute, event, link or status of a span, nor any log record's body or attributes, holds a
    # token, the IDENTITY_HEADER, a datastore credential, the storage key, a SAS, or a subject's identifiers
    span_texts: list[str] = []
    for span in spans:
        span_texts.append(span.name)
        span_texts.append(json.dumps(dict(span.attributes or {}), default=str))
        span_texts.extend(json.dumps(dict(e.attributes or {}), default=str) + e.name for e in span.events)
        span_texts.extend(json.dumps(dict(link.attributes or {}), default=str) for link in span.links)
        span_texts.append(str(span.status.description))
    log_texts: list[str] = []
    for record in records:
        log_texts.append(str(record.log_record.body))
        log_texts.append(json.dumps(dict(record.log_record.attributes or {}), default=str))
    exported = "\n".join(span_texts + log_texts)
    forbidden = forbidden_values(emulator, dsr_env)
    for value, what in forbidden.items():
        assert value not in exported, f"{what} was exported"
    assert "Bearer " not in exported and "sig=" not in exported
    # AND a span holds no URL at all (its name and attributes say the family, method and status)
    for marker in ("http://", "https://", "?", "@"):
        assert marker not in "\n".join(span_texts), f"{marker!r} in a span"
    # AND the log records carry the request's id as an attribute (a custom dimension in Azure Monitor)
    assert all((r.log_record.attributes or {}).get("requestId") for r in records)
