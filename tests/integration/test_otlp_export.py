"""`dsr process` with OTEL_EXPORTER_OTLP_ENDPOINT pointing at a local collector: a tiny loopback server that
accepts OTLP/HTTP protobuf posts, decoded with ``opentelemetry-proto``. One request is one trace with the
request, workspace and call spans; the metrics and the app's log records arrive too; nothing holds a URL,
a token or the subject's identifiers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.security.test_no_leaks import forbidden_values
from tests.support.bundles import DEMO_TARGET
from tools.emulator import JANE, TENANT_ID

pytestmark = pytest.mark.integration
DSR = str(Path(sys.executable).with_name("dsr"))
DECODERS = {
    "/v1/traces": ExportTraceServiceRequest,
    "/v1/metrics": ExportMetricsServiceRequest,
    "/v1/logs": ExportLogsServiceRequest,
}


class Collector:
    """Keeps every OTLP/HTTP post, decoded, by path."""

    def __init__(self) -> None:
        self.posts: dict[str, list[Any]] = {path: [] for path in DECODERS}
        self.content_types: set[str] = set()
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                decoder = DECODERS.get(self.path)
                if decoder is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                message = decoder()
                message.ParseFromString(body)
                with collector.lock:
                    collector.posts[self.path].append(message)
                    collector.content_types.add(self.headers.get("Content-Type", ""))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def spans(self) -> list[dict[str, Any]]:
        return [
            span
            for post in self.posts["/v1/traces"]
            for resource in MessageToDict(post).get("resourceSpans", [])
            for scope in resource.get("scopeSpans", [])
            for span in scope.get("spans", [])
        ]


@pytest.fixture
def collector() -> Iterator[Collector]:
    found = Collector()
    found.thread.start()
    try:
        yield found
    finally:
        found.server.shutdown()
        found.server.server_close()


def attributes(item: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values()), None) for a in item.get("attributes", [])}


def test_dsr_process_exports_one_trace_with_the_spans_to_a_local_collector(
    dsr_env: dict[str, str], emulator: Any, collector: Collector
) -> None:
    # GIVEN a subject-scoped export request, and OTEL_EXPORTER_OTLP_ENDPOINT pointing at the local collector
    request = {
        "schemaVersion": "1",
        "requestId": "TCK-OTLP-1",
        "operation": "export",
        "targets": [DEMO_TARGET],
        "resourceKinds": ["models", "experiments"],
        "scope": "subject",
        "subject": {"objectId": JANE.object_id, "tenantId": TENANT_ID, "upn": JANE.upn},
        "requestedBy": "pytest",
    }
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "DSR_LOG_LEVEL": "DEBUG"}
    # WHEN `dsr process` runs it
    result = subprocess.run(
        [DSR, "process", "-"], input=json.dumps(request), capture_output=True, text=True, env=env, timeout=120, check=False
    )
    # THEN the request completed, and the collector received OTLP/HTTP protobuf
    assert result.returncode == 0, result.stderr[-2000:]
    assert collector.content_types == {"application/x-protobuf"}
    spans = collector.spans()
    # AND the spans are one trace: the request span, the workspace span under it, the call spans under that
    assert len({s["traceId"] for s in spans}) == 1
    (root,) = [s for s in spans if s["name"] == "dsr.request"]
    assert "parentSpanId" not in root
    assert attributes(root) | {"dsr.attempt": "1", "dsr.workspaces": "1"} == attributes(root)
    assert attributes(root)["dsr.request_id"] == "TCK-OTLP-1" and attributes(root)["dsr.operation"] == "export"
    (workspace,) = [s for s in spans if s["name"] == "dsr.workspace"]
    assert workspace["parentSpanId"] == root["spanId"]
    calls = [s for s in spans if s.get("kind") == "SPAN_KIND_CLIENT"]
    assert {s["name"] for s in calls} == {"GET arm", "GET experiments", "GET modelmanagement"}
    assert all(s["parentSpanId"] == workspace["spanId"] for s in calls)
    # AND the metrics of the runbook arrived
    metric_names = {
        metric["name"]
        for post in collector.posts["/v1/metrics"]
        for resource in MessageToDict(post).get("resourceMetrics", [])
        for scope in resource.get("scopeMetrics", [])
        for metric in scope.get("metrics", [])
    }
    assert {"dsr.requests", "dsr.items", "dsr.calls", "dsr.deadline.seconds"} <= metric_names
    # AND the app's log records, each with the requestId as an attribute
    records = [
        record
        for post in collector.posts["/v1/logs"]
        for resource in MessageToDict(post).get("resourceLogs", [])
        for scope in resource.get("scopeLogs", [])
        for record in scope.get("logRecords", [])
    ]
    assert records and [r["body"] for r in records if attributes(r).get("requestId") != "TCK-OTLP-1"] == []
    # AND no span holds a URL, and nothing exported holds a token or the subject's identifiers
    span_text = json.dumps(spans)
    assert "http://" not in span_text and "?" not in span_text
    exported = span_text + json.dumps([MessageToDict(p) for p in collector.posts["/v1/logs"]])
    for value, what in forbidden_values(emulator, dsr_env).items():
        assert value not in exported, f"{what} was exported"
