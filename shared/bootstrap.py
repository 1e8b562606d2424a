"""The composition root: builds the real adapters lazily, once per process (a Functions worker reuses them).

The adapters are imported inside the functions that build them, on purpose: they pull in the Azure SDKs
(about 0.4 s of imports), which a Functions worker would otherwise load when it indexes ``function_app`` at
cold start, and which a command that needs only some of them (the CLI, a test) never loads. Everything
else (domain, ports, service) is imported at the top."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.domain.catalog import load_catalog
from shared.domain.urls import UrlPolicy
from shared.logs import protect_existing_handlers, quiet_libraries
from shared.ports import DeadLetterStore, OutcomePublisher, RequestSender
from shared.service.delivery import AUTO_COMPLETE, Delivery, Settlement, Verdict, process_delivery, request_identity
from shared.service.failures import describe_failure
from shared.service.processor import Services
from shared.service.state import StateStore
from shared.service.status import cancel_request, request_status
from shared.service.watchdog import notify_due_soon, sweep
from shared.settings import Settings, load_settings, require_storage

T = TypeVar("T")
log = logging.getLogger("dsr.bootstrap")


def lazy(factory: Callable[[], T]) -> Callable[[], T]:
    lock = threading.Lock()
    box: list[T] = []

    def get() -> T:
        with lock:
            if not box:
                box.append(factory())
            return box[0]

    return get


def limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread that contends for malloc an arena of its own (up to 8 per CPU) and keeps what
    is freed in it: with 16 export threads, tens of MB of peak RSS. Like MALLOC_ARENA_MAX=2 (which wins)."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def build_services(
    settings: Settings | None = None, *, publishers: list[OutcomePublisher] | None = None, with_servicebus: bool = True
) -> Services:
    limit_malloc_arenas()  # before any export thread exists
    settings = settings or load_settings()
    require_storage(settings)
    start_telemetry(settings)
    catalog = load_catalog(parameters=(("DSR_ARM_ML_API_VERSION", settings.arm_ml_api_version),))

    @lazy
    def credential() -> Any:
        from shared.adapters.identity import build_credential

        return build_credential(settings)

    @lazy
    def aml() -> Any:
        from shared.adapters.aml_http import AzureMLHttp

        return AzureMLHttp(
            credential(),
            scope=settings.token_scope,
            policy=UrlPolicy(settings.allowed_endpoints),
            pool_size=settings.concurrency * 2,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_attempts=settings.max_attempts,
            max_retry_after=settings.max_retry_after,
            max_response_bytes=settings.max_response_bytes,
            response_deadline=settings.response_deadline_seconds,
        )

    @lazy
    def blob_service() -> Any:
        from shared.adapters.blob import blob_service as make

        return make(settings, credential() if settings.storage_blob_uri else None)

    @lazy
    def bundles() -> Any:
        from shared.adapters.blob import BlobBundleStore

        return BlobBundleStore(blob_service(), settings.export_container)

    @lazy
    def audit() -> Any:
        from shared.adapters.blob import BlobAuditLog

        return BlobAuditLog(blob_service(), settings.audit_container)

    @lazy
    def state() -> Any:
        from shared.adapters.blob import BlobStateBackend

        return StateStore(BlobStateBackend(blob_service(), settings.state_container), lease_seconds=settings.lease_seconds)

    chosen = list(publishers or [])
    if with_servicebus and settings.servicebus_namespace and publishers is None:
        from shared.adapters.servicebus import ServiceBusOutcomePublisher

        chosen.append(
            ServiceBusOutcomePublisher(settings.servicebus_namespace, settings.outcome_queue, credential_factory=credential)
        )
    if settings.eventgrid_topic_endpoint and publishers is None:
        from shared.adapters.eventgrid import EventGridOutcomePublisher

        chosen.append(EventGridOutcomePublisher(settings.eventgrid_topic_endpoint, credential_factory=credential))
    return Services(settings=settings, catalog=catalog, aml=aml, bundles=bundles, audit=audit, state=state, publishers=chosen)


def start_telemetry(settings: Settings) -> None:
    """The OpenTelemetry SDK and exporters, once per process, only when an exporter is configured
    (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``APPLICATIONINSIGHTS_CONNECTION_STRING``); else nothing is imported."""
    if settings.otlp_endpoint or settings.appinsights_connection_string:
        from shared.adapters.identity import build_credential
        from shared.adapters.telemetry import install

        install(settings, credential=lambda: build_credential(settings))


def flush_telemetry() -> None:
    """Export what is buffered (the CLI, before it exits); nothing when telemetry is off."""
    if "shared.adapters.telemetry" in sys.modules:
        from shared.adapters.telemetry import installed

        found = installed()
        if found is not None:
            found.flush()


# -- the process's runtime -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Runtime:
    services: Services
    requests: RequestSender | None


class ProcessRuntime:
    """The services of this worker process, built on the first message (not at indexing) and reused."""

    def __init__(self, factory: Callable[[], Runtime] | None = None) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._runtime: Runtime | None = None

    def get(self) -> Runtime:
        with self._lock:
            if self._runtime is None:
                protect_existing_handlers()  # redacted, and the requestId in the text the host keeps
                quiet_libraries()  # the Azure SDK and HTTP libraries at WARNING, as in the CLI
                self._runtime = (self._factory or build_runtime)()
            return self._runtime

    def reset(self) -> None:
        with self._lock:
            self._runtime = None


def build_runtime() -> Runtime:
    services = build_services()
    settings = services.settings
    if not settings.servicebus_namespace:
        return Runtime(services, None)
    from shared.adapters.identity import build_credential
    from shared.adapters.servicebus import ServiceBusRequestQueue

    return Runtime(
        services,
        ServiceBusRequestQueue(
            settings.servicebus_namespace, settings.request_queue, credential_factory=lambda: build_credential(settings)
        ),
    )


PROCESS_RUNTIME = ProcessRuntime()


def handle_delivery(body: bytes | str, delivery: Delivery, settlement: Settlement = AUTO_COMPLETE) -> Verdict:
    """The trigger's one call: process with this process's runtime, then settle."""
    try:
        runtime = PROCESS_RUNTIME.get()
    except Exception as exc:  # noqa: BLE001 - without services nothing can be published; redeliver
        code, message, _ = describe_failure(exc)
        log.error(
            "the app could not start; the message will be redelivered",
            extra={
                "requestId": request_identity(body)[0],
                "messageId": delivery.message_id,
                "deliveryCount": delivery.delivery_count,
                "code": code,
            },
        )
        verdict = Verdict("redeliver", code=code, reason=message)
    else:
        verdict = process_delivery(body, delivery, runtime.services, runtime.requests)
    settlement.settle(verdict)
    return verdict


def run_watchdog() -> dict[str, int]:
    """The timer's one call: ``shared.service.watchdog.sweep`` with this process's request queue, then the
    deadline reminders."""
    runtime = PROCESS_RUNTIME.get()
    if runtime.requests is None:
        log.warning("the watchdog needs ServiceBusConnection__fullyQualifiedNamespace; nothing was re-enqueued")
        tally = {"requeued": 0, "failed": 0}
    else:
        tally = sweep(runtime.services, runtime.requests)
    return {**tally, "dueSoon": notify_due_soon(runtime.services)}


def http_status(request_id: str) -> tuple[int, dict[str, Any]]:
    """``GET /api/requests/{requestId}``: one state read."""
    return request_status(PROCESS_RUNTIME.get().services.state(), request_id)


def http_cancel(request_id: str) -> tuple[int, dict[str, Any]]:
    """``POST /api/requests/{requestId}/cancel``."""
    return cancel_request(PROCESS_RUNTIME.get().services.state(), request_id)


def build_dead_letters(settings: Settings, namespace: str, queue: str) -> DeadLetterStore:
    from shared.adapters.identity import build_credential
    from shared.adapters.servicebus import ServiceBusDeadLetters

    return ServiceBusDeadLetters(namespace, queue, credential_factory=lambda: build_credential(settings))
