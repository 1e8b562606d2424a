"""Traces and metrics of the app, written against the OpenTelemetry API only.

The API (``opentelemetry-api``) is a vendor-neutral interface with a no-op default, like ``logging``: until
``shared.adapters.telemetry`` installs the SDK's providers (when an exporter is configured), every call
below does nothing. The service layer and the HTTP seam call these few hooks; nothing else knows OTel.

    dsr.request        one span per invocation (a queue delivery, a ``dsr process``): requestId, operation,
                       attempt, workspace count; linked to the invocation that sent its message (``traceparent``)
      dsr.workspace    one span per workspace of the request (name and location only)
        GET arm, ...   one client span per outbound call, named by its endpoint family: no URL, no query

Metrics: ``dsr.requests`` (by operation and outcome), ``dsr.items`` (by operation, kind and result),
``dsr.calls`` (by family, method and outcome), ``dsr.throttled``, ``dsr.retries``, ``dsr.deadletters``
(by code) and the histogram ``dsr.deadline.seconds`` (seconds left before the request's legal deadline).

Attributes hold counts, codes, kinds and workspace names: never a URL, a token, a subject or a UPN.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

NAME = "aml-dsr"
TRACEPARENT = "traceparent"  # the application property carrying the sender's span (W3C trace context)
DEFAULT_DEADLINE = timedelta(days=30)  # GDPR art. 12(3): one month after the request was received

tracer = trace.get_tracer(NAME)
meter = metrics.get_meter(NAME)
_propagator = TraceContextTextMapPropagator()

REQUESTS = meter.create_counter("dsr.requests", unit="{request}", description="Request invocations by outcome")
ITEMS = meter.create_counter("dsr.items", unit="{item}", description="Items exported or deleted, by kind and result")
CALLS = meter.create_counter("dsr.calls", unit="{call}", description="Outbound Azure ML calls (after retries)")
THROTTLED = meter.create_counter("dsr.throttled", unit="{response}", description="Throttled answers (429, 503 Retry-After)")
RETRIES = meter.create_counter("dsr.retries", unit="{attempt}", description="Retried outbound attempts")
DEADLETTERS = meter.create_counter("dsr.deadletters", unit="{message}", description="Request messages dead-lettered")
DEADLINE = meter.create_histogram(
    "dsr.deadline.seconds", unit="s", description="Seconds left before the request's deadline, at each invocation"
)


# -- the request span -------------------------------------------------------------------------------------


class Invocation:
    """The span of one request invocation and the facts its ``dsr.requests`` point is recorded with."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self.operation = "unknown"
        self.outcome = "error"
        self._workspaces: dict[str, Span] = {}
        self._lock = threading.Lock()
        self._context = trace.set_span_in_context(span)

    def workspace_span(self, name: str, location: str | None) -> Span:
        with self._lock:
            found = self._workspaces.get(name)
            if found is None:
                attributes = {"dsr.workspace": name, **({"dsr.location": location} if location else {})}
                found = tracer.start_span("dsr.workspace", context=self._context, attributes=attributes)
                self._workspaces[name] = found
            return found

    def close(self) -> None:
        with self._lock:
            for span in self._workspaces.values():
                span.end()
            self._workspaces.clear()


_invocation: contextvars.ContextVar[Invocation | None] = contextvars.ContextVar("dsr_invocation", default=None)


def links_from(properties: Mapping[str, Any] | None) -> list[Link]:
    """A link to the span that sent this message (a continuation, a re-enqueue, a fan-out child)."""
    carrier = {TRACEPARENT: str(properties[TRACEPARENT])} if properties and properties.get(TRACEPARENT) else {}
    if not carrier:
        return []
    span_context = trace.get_current_span(_propagator.extract(carrier)).get_span_context()
    if not span_context.is_valid:
        return []
    return [Link(span_context, {"dsr.link": "sender"})]


@contextlib.contextmanager
def invocation(properties: Mapping[str, Any] | None = None, *, delivery_count: int | None = None) -> Iterator[Invocation]:
    """The ``dsr.request`` span around one invocation; ``dsr.requests`` is counted when it ends."""
    attributes: dict[str, Any] = {} if delivery_count is None else {"messaging.delivery_count": delivery_count}
    with tracer.start_as_current_span(
        "dsr.request",
        kind=SpanKind.CONSUMER if delivery_count is not None else SpanKind.INTERNAL,
        links=links_from(properties),
        attributes=attributes,
        record_exception=False,  # an exception's text is not ours to export; its type and code are
        set_status_on_exception=False,
    ) as span:
        current = Invocation(span)
        token = _invocation.set(current)
        try:
            yield current
        except BaseException as exc:
            current.outcome = "error"
            _failed(span, exc)
            raise
        finally:
            _invocation.reset(token)
            current.close()
            span.set_attribute("dsr.outcome", current.outcome)
            REQUESTS.add(1, {"operation": current.operation, "outcome": current.outcome})


def describe_request(
    request_id: str, operation: str | None, workspaces: int | None = None, *, attempt: int | None = None
) -> None:
    """Name the request on the current invocation's span (once it is known)."""
    current = _invocation.get()
    if current is None:
        return
    current.operation = operation or "unknown"
    current.span.set_attribute("dsr.request_id", request_id)
    current.span.set_attribute("dsr.operation", current.operation)
    if workspaces is not None:
        current.span.set_attribute("dsr.workspaces", workspaces)
    if attempt is not None:
        current.span.set_attribute("dsr.attempt", attempt)


def record_deadline(operation: str, started_at: str, due_by: str | None = None, *, now: datetime | None = None) -> None:
    """``dsr.deadline.seconds``: what is left of the deadline (``dueBy``, else 30 days after the start)."""
    try:
        deadline = _parse_time(due_by) if due_by else _parse_time(started_at) + DEFAULT_DEADLINE
    except ValueError:
        return
    left = (deadline - (now or datetime.now(UTC))).total_seconds()
    DEADLINE.record(left, {"operation": operation})
    current = _invocation.get()
    if current is not None:
        current.span.set_attribute("dsr.deadline_seconds", round(left))


def record_items(event: Mapping[str, Any]) -> None:
    """``dsr.items`` from a final outcome event's counts (export: per kind; delete: per kind and result)."""
    data = event.get("data") or {}
    operation = str(data.get("operation") or _operation_of(event))
    totals: dict[tuple[str, str], int] = {}
    for per_kind in (data.get("counts") or {}).values():
        if not isinstance(per_kind, Mapping):
            continue
        for kind, value in per_kind.items():
            if isinstance(value, int):
                totals[(kind, "exported")] = totals.get((kind, "exported"), 0) + value
            elif isinstance(value, Mapping):
                for result, n in value.items():
                    if isinstance(n, int) and n:
                        totals[(kind, result)] = totals.get((kind, result), 0) + n
    for (kind, result), n in totals.items():
        if n:
            ITEMS.add(n, {"operation": operation, "kind": kind, "result": result})


def dead_lettered(code: str | None) -> None:
    DEADLETTERS.add(1, {"code": code or "unknown"})


def trace_properties() -> dict[str, str]:
    """Application properties carrying the current span to whoever receives the message (empty when off)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return {TRACEPARENT: carrier[TRACEPARENT]} if TRACEPARENT in carrier else {}


# -- workspaces -------------------------------------------------------------------------------------------


def _workspace_of(target: Any) -> Span | None:
    current = _invocation.get()
    if current is None or not current.span.is_recording():
        return None
    return current.workspace_span(str(getattr(target, "workspace", target)), getattr(target, "location", None))


@contextlib.contextmanager
def workspace(target: Any) -> Iterator[None]:
    """Make the target's ``dsr.workspace`` span current (created on first use, ended with the request)."""
    span = _workspace_of(target)
    if span is None:
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


def in_workspace(target_of: Callable[..., Any]) -> Callable[[F], F]:
    """Decorator: run the method inside the workspace span of ``target_of(*args)`` (a step's, an item's target)."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with workspace(target_of(*args, **kwargs)):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def each_workspace(targets: Iterable[T]) -> Iterator[T]:
    """``for target in each_workspace(targets)``: each loop body runs inside its target's workspace span."""
    for target in targets:
        with workspace(target):
            yield target


# -- outbound calls ---------------------------------------------------------------------------------------


class Call:
    def __init__(self, span: Span, family: str, method: str) -> None:
        self.span = span
        self.family = family
        self.method = method
        self.attempts = 1


_call: contextvars.ContextVar[Call | None] = contextvars.ContextVar("dsr_call", default=None)


@contextlib.contextmanager
def outbound_call(method: str, family: str, host: str | None = None) -> Iterator[Call]:
    """A client span named ``"{METHOD} {family}"``; ``dsr.calls`` is counted when it ends. No URL is kept."""
    attributes: dict[str, Any] = {"http.request.method": method, "dsr.family": family}
    if host:
        attributes["server.address"] = host
    with tracer.start_as_current_span(
        f"{method} {family}", kind=SpanKind.CLIENT, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        call = Call(span, family, method)
        token = _call.set(call)
        outcome = "ok"
        try:
            yield call
        except BaseException as exc:
            outcome = str(getattr(exc, "code", None) or type(exc).__name__)
            _failed(span, exc)
            raise
        finally:
            _call.reset(token)
            span.set_attribute("dsr.attempts", call.attempts)
            CALLS.add(1, {"dsr.family": family, "http.request.method": method, "outcome": outcome})


def answered(status: int) -> None:
    call = _call.get()
    if call is not None:
        call.span.set_attribute("http.response.status_code", status)


def throttled(status: int | None) -> None:
    call = _call.get()
    THROTTLED.add(1, {"dsr.family": call.family if call else "unknown", "http.response.status_code": status or 0})


def retried(code: str) -> None:
    call = _call.get()
    if call is not None:
        call.attempts += 1
    RETRIES.add(1, {"dsr.family": call.family if call else "unknown", "code": code})


# -- helpers ----------------------------------------------------------------------------------------------


def _failed(span: Span, exc: BaseException) -> None:
    code = getattr(exc, "code", None)
    status = getattr(exc, "status", None)
    span.set_attribute("error.type", type(exc).__name__)
    if isinstance(code, str):
        span.set_attribute("dsr.error.code", code)
    if isinstance(status, int):
        span.set_attribute("http.response.status_code", status)
    span.set_status(Status(StatusCode.ERROR, code if isinstance(code, str) else type(exc).__name__))


def _parse_time(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _operation_of(event: Mapping[str, Any]) -> str:
    parts = str(event.get("type", "")).split(".")  # aml.dsr.<operation>.<status>
    return parts[2] if len(parts) == 4 else "unknown"
