"""The service layer: one request message in, one outcome event out.

``handle`` validates (an invalid message is rejected before any I/O), runs the export or delete
through the ports, writes the manifest, publishes the outcome and returns it. Transient failures that
outlast the HTTP retries raise, so the transport (Service Bus) can redeliver.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.bundle import bundle_prefix, manifest_name
from shared.catalog import Catalog
from shared.contract import DsrRequest, parse_request
from shared.errors import RequestRejected
from shared.export import Endpoints, ExportTraversal
from shared.logs import request_context
from shared.outcome import outcome_event, rejected_event, status_of, utc_now
from shared.ports import AuditLog, AzureML, BundleStore, OutcomePublisher
from shared.settings import Settings

log = logging.getLogger("dsr.processor")


@dataclass
class Services:
    """What the service layer needs; ``bootstrap`` builds the real ones lazily, tests pass fakes."""

    settings: Settings
    catalog: Catalog
    aml: Callable[[], AzureML]
    bundles: Callable[[], BundleStore]
    audit: Callable[[], AuditLog]
    publishers: list[OutcomePublisher] = field(default_factory=list)


def handle(body: bytes | str, services: Services) -> dict[str, Any]:
    started_at = utc_now()
    try:
        request = parse_request(body)
    except RequestRejected as rejection:
        event = rejected_event(rejection, body, started_at=started_at)
        with request_context(event["data"]["requestId"]):
            log.warning("request rejected", extra={"codes": [v.code for v in rejection.violations]})
            publish(event, services)
        return event
    with request_context(request.requestId):
        log.info("request accepted", extra={"operation": request.operation, "targets": len(request.targets),
                                            "kinds": list(request.kinds)})
        if request.operation == "export":
            event = run_export(request, services, started_at)
        else:
            from shared.delete import run_delete

            event = run_delete(request, services, started_at)
        publish(event, services)
        log.info("request finished", extra={"status": event["data"]["status"]})
        return event


def publish(event: dict[str, Any], services: Services) -> None:
    for publisher in services.publishers:
        publisher.publish(event)


def run_export(request: DsrRequest, services: Services, started_at: str) -> dict[str, Any]:
    settings = services.settings
    store = services.bundles()
    manifest = manifest_name(request.requestId)
    store.delete(manifest)  # a reader must never trust a manifest while its files are being rewritten
    clock = time.monotonic()
    traversal = ExportTraversal(request, catalog=services.catalog, endpoints=Endpoints(settings.endpoints),
                                aml=services.aml(), store=store, concurrency=settings.concurrency)
    result = traversal.run()
    succeeded = [t for t in result.targets if t.ok]
    status = status_of(len(result.errors), len(succeeded), len(result.targets))
    counts = {t.target.resource_id: {k: t.counts.get(k, 0) for k in request.kinds} for t in succeeded}
    errors = [e.as_dict() for e in result.errors]
    completed_at = utc_now()
    store.put_json(manifest, {
        "schemaVersion": "1",
        "requestId": request.requestId,
        "request": request.model_dump(mode="json"),
        "status": status,
        "errors": errors,
        "startedAt": started_at,
        "completedAt": completed_at,
        "container": settings.export_container,
        "files": [f.as_dict() for f in result.files],
        "counts": counts,
        "skipped": {t.target.resource_id: t.skipped for t in result.targets if t.skipped},
        "secretsRedacted": sum(t.secrets_scrubbed for t in result.targets),
        "calls": result.calls,
    })
    log.info("export written", extra={"files": len(result.files), "calls": result.calls,
                                      "seconds": round(time.monotonic() - clock, 3)})
    return outcome_event(request.requestId, "export", status, {
        "counts": counts,
        "bundle": {"container": settings.export_container, "prefix": bundle_prefix(request.requestId),
                   "manifest": manifest},
        "errors": errors,
        "startedAt": started_at,
        "completedAt": completed_at,
    })
