"""The OpenTelemetry SDK and its exporters: installed once per process, only when an exporter is configured.

    APPLICATIONINSIGHTS_CONNECTION_STRING   Azure Monitor exporters (traces, metrics, the app's logs)
    OTEL_EXPORTER_OTLP_ENDPOINT             OTLP/HTTP protobuf to {endpoint}/v1/traces, /v1/metrics, /v1/logs
    neither                                 nothing is imported or installed: the API stays a no-op

Both may be set. The Azure Monitor exporters are used without the ``azure-monitor-opentelemetry`` distro's
auto-instrumentation (which would record every outbound URL, and pulls in some 25 packages): the app's own
spans (``shared.telemetry``) say what a call was without its URL. Logs of the ``dsr`` loggers go to the
exporters with their ``extra`` fields as attributes (custom dimensions), after the redacting filter.
SDK imports happen in ``install`` (called lazily by ``shared.bootstrap``), never when the app is indexed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.logs import RedactingFilter
from shared.settings import Settings

SERVICE_NAME = "aml-dsr"


@dataclass
class Installed:
    """What ``install`` set up: flushed and shut down by ``shutdown`` (the CLI at exit, tests)."""

    exporters: list[str]
    tracer_provider: Any = None
    meter_provider: Any = None
    logger_provider: Any = None
    log_handler: logging.Handler | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def flush(self) -> None:
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            if provider is not None:
                provider.force_flush()

    def shutdown(self) -> None:
        if self.log_handler is not None:
            logging.getLogger("dsr").removeHandler(self.log_handler)
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            if provider is not None:
                provider.shutdown()


_lock = threading.Lock()
_installed: Installed | None = None


def wanted(settings: Settings) -> bool:
    return bool(settings.otlp_endpoint or settings.appinsights_connection_string)


def install(settings: Settings, credential: Callable[[], Any] | None = None) -> Installed | None:
    """Install the SDK providers with the configured exporters (once per process); None when none is set.
    With ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD`` (local auth off, as ``infra/`` deploys
    Application Insights) the Azure Monitor exporters authenticate with ``credential()``, the app's identity."""
    global _installed
    if not wanted(settings):
        return None
    with _lock:
        if _installed is None:
            _build(settings, credential)  # (no log line: a line outside a request could not name one)
        return _installed


def installed() -> Installed | None:
    return _installed


def _build(settings: Settings, credential: Callable[[], Any] | None) -> Installed:
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    span_exporters: list[Any] = []
    metric_exporters: list[Any] = []
    log_exporters: list[Any] = []
    names: list[str] = []
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        base = settings.otlp_endpoint
        span_exporters.append(OTLPSpanExporter(endpoint=f"{base}/v1/traces"))
        metric_exporters.append(OTLPMetricExporter(endpoint=f"{base}/v1/metrics"))
        log_exporters.append(OTLPLogExporter(endpoint=f"{base}/v1/logs"))
        names.append("otlp")
    if settings.appinsights_connection_string:
        from azure.monitor.opentelemetry.exporter import (
            AzureMonitorLogExporter,
            AzureMonitorMetricExporter,
            AzureMonitorTraceExporter,
        )

        options: dict[str, Any] = {"connection_string": settings.appinsights_connection_string}
        if settings.appinsights_entra_auth and credential is not None:
            options["credential"] = credential()
        span_exporters.append(AzureMonitorTraceExporter(**options))
        metric_exporters.append(AzureMonitorMetricExporter(**options))
        log_exporters.append(AzureMonitorLogExporter(**options))
        names.append("azure-monitor")
    return wire(
        names,
        [BatchSpanProcessor(e) for e in span_exporters],
        [PeriodicExportingMetricReader(e) for e in metric_exporters],
        [BatchLogRecordProcessor(e) for e in log_exporters],
    )


def wire(names: list[str], span_processors: list[Any], metric_readers: list[Any], log_processors: list[Any]) -> Installed:
    """Set the global tracer, meter and logger providers, and hand the ``dsr`` loggers' records (redacted,
    their ``extra`` fields as attributes) to the log processors. The global providers can be set only once
    per process: the tests call this once with the SDK's in-memory exporters."""
    global _installed
    from opentelemetry import metrics, trace
    from opentelemetry._logs import set_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create({"service.name": SERVICE_NAME, "service.namespace": "aml-dsr"})
    tracer_provider = TracerProvider(resource=resource)
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(resource=resource, metric_readers=metric_readers)
    logger_provider = LoggerProvider(resource=resource)
    for log_processor in log_processors:
        logger_provider.add_log_record_processor(log_processor)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    set_logger_provider(logger_provider)
    handler = LoggingHandler(level=logging.NOTSET, logger_provider=logger_provider)
    handler.addFilter(RedactingFilter())
    logging.getLogger("dsr").addHandler(handler)  # the app's records only: no SDK chatter, no export loop
    _installed = Installed(names, tracer_provider, meter_provider, logger_provider, handler)
    return _installed
