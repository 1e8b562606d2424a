"""The OpenTelemetry SDK with its own in-memory exporters, installed once per test process.

OpenTelemetry's global providers can be set only once per process, so the first test that asks installs
them (through ``shared.adapters.telemetry.wire``, as the app does) and every later test shares them. Spans and
log records are kept only while a test holds ``recording()``; metrics are cumulative, so a test compares
points before and after.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.adapters.telemetry import wire


class _Gated(InMemorySpanExporter):
    def __init__(self) -> None:
        super().__init__()
        self.active = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return super().export(spans) if self.active else SpanExportResult.SUCCESS


class _GatedLogs(InMemoryLogRecordExporter):
    def __init__(self) -> None:
        super().__init__()
        self.active = False

    def export(self, batch: Any) -> Any:
        if self.active:
            return super().export(batch)
        return None


@dataclass
class Memory:
    spans: _Gated
    logs: _GatedLogs
    reader: InMemoryMetricReader

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def log_records(self) -> list[Any]:
        return list(self.logs.get_finished_logs())

    def points(self, name: str) -> dict[tuple[tuple[str, Any], ...], float]:
        """Current values of one metric: ``{sorted attribute pairs: value}`` (a histogram: its count)."""
        found: dict[tuple[tuple[str, Any], ...], float] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name != name:
                        continue
                    for point in metric.data.data_points:
                        key = tuple(sorted((point.attributes or {}).items()))
                        found[key] = float(getattr(point, "value", getattr(point, "count", 0)))
        return found


@functools.cache
def memory() -> Memory:
    spans, logs, reader = _Gated(), _GatedLogs(), InMemoryMetricReader()
    wire(["memory"], [SimpleSpanProcessor(spans)], [reader], [SimpleLogRecordProcessor(logs)])
    return Memory(spans, logs, reader)


@contextlib.contextmanager
def recording() -> Iterator[Memory]:
    found = memory()
    found.spans.clear()
    found.logs.clear()
    found.spans.active = found.logs.active = True
    try:
        yield found
    finally:
        found.spans.active = found.logs.active = False
        found.spans.clear()
        found.logs.clear()


def delta(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
