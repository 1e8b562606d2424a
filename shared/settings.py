"""Typed settings, read once (docs/contract.md §4). The process environment wins over ``local.settings.json``.

A missing or malformed setting raises ``ConfigurationError`` naming it, so the app stops at start.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from shared.domain.errors import ConfigurationError
from shared.domain.scrub import scrub_text
from shared.domain.urls import is_loopback_host, redact_url

LOCAL_SETTINGS_FILE = "local.settings.json"


@dataclass(frozen=True)
class Settings:
    request_queue: str = "dsr-requests"
    outcome_queue: str = "dsr-outcomes"
    servicebus_namespace: str | None = None
    eventgrid_topic_endpoint: str | None = None
    storage_connection_string: str | None = None
    storage_blob_uri: str | None = None
    export_container: str = "dsr-exports"
    state_container: str = "dsr-state"
    audit_container: str = "dsr-audit"
    endpoints: Mapping[str, str] = field(
        default_factory=lambda: {
            "arm": "https://management.azure.com",
            "modelmanagement": "https://{location}.modelmanagement.azureml.net",
            "experiments": "https://{location}.experiments.azureml.net",
            "aether": "https://{location}.aether.ms",
        }
    )
    arm_ml_api_version: str = "2024-10-01"
    resourcegraph_endpoint: str | None = None  # None: the ARM endpoint
    token_scope: str = "https://management.core.windows.net/.default"  # noqa: S105 - a scope, not a secret
    auth: str = "managed-identity"
    managed_identity_client_id: str | None = None
    lease_seconds: int = 60
    concurrency: int = 16
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    max_attempts: int = 8
    max_retry_after: float = 120.0
    max_response_bytes: int = 64 * 1024 * 1024
    response_deadline_seconds: float = 300.0
    max_delivery_count: int = 10
    lro_deadline_seconds: float = 1800.0
    time_budget_seconds: float = 420.0
    checkpoint_seconds: float = 5.0
    watchdog_idle_seconds: float = 300.0
    watchdog_max_requeues: int = 3
    download_hours: int = 168
    workspace_concurrency: int = 8
    log_level: str = "INFO"
    otlp_endpoint: str | None = None  # OTEL_EXPORTER_OTLP_ENDPOINT: OTLP/HTTP traces, metrics and logs
    appinsights_connection_string: str | None = field(default=None, repr=False)  # APPLICATIONINSIGHTS_CONNECTION_STRING
    appinsights_entra_auth: bool = False  # APPLICATIONINSIGHTS_AUTHENTICATION_STRING=Authorization=AAD

    @property
    def resource_graph_base(self) -> str:
        """Where Azure Resource Graph is asked for the workspaces of a ``discover`` request."""
        return (self.resourcegraph_endpoint or self.endpoints["arm"]).rstrip("/")

    @property
    def allowed_endpoints(self) -> dict[str, str]:
        """Every base URL the app may send its token to (the URL policy's allow-list)."""
        return {**self.endpoints, "resourcegraph": self.resource_graph_base}


_ENDPOINT_SETTINGS = {
    "arm": "DSR_ARM_ENDPOINT",
    "modelmanagement": "DSR_MODELMANAGEMENT_ENDPOINT",
    "experiments": "DSR_EXPERIMENTS_ENDPOINT",
    "aether": "DSR_AETHER_ENDPOINT",
}


def read_local_settings(directory: Path) -> dict[str, str]:
    file = directory / LOCAL_SETTINGS_FILE
    if not file.is_file():
        return {}
    try:
        values = json.loads(file.read_text(encoding="utf-8")).get("Values", {})
    except (ValueError, AttributeError) as exc:
        raise ConfigurationError(f"{file}: not valid JSON with a 'Values' object ({exc})") from None
    return {str(k): str(v) for k, v in values.items() if v is not None}


def merged_environment(environ: Mapping[str, str] | None = None, directory: Path | None = None) -> dict[str, str]:
    values = read_local_settings(directory or Path.cwd())
    values.update(os.environ if environ is None else environ)
    return values


def shown(value: str) -> str:
    """A setting's value as a configuration error may show it: a URL without user info or query values
    (a SAS), secret-looking parts (``AccountKey=``, ``Password=``, tokens) replaced, at most 80 characters."""
    text = value.strip()
    if "://" in text:
        text = redact_url(text)
    text = scrub_text(text)[0]
    return repr(text if len(text) <= 80 else text[:80] + "...")


def _validate_endpoint(name: str, template: str) -> str:
    template = template.strip().rstrip("/")
    try:
        parts = urlsplit(template.replace("{location}", "westeurope"))
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"{name} is not a valid URL template: {shown(template)}") from None
    del port
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigurationError(f"{name} must be an absolute https URL (got {shown(template)})")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigurationError(f"{name} must use https (plain http is only allowed for loopback hosts): {shown(template)}")
    if parts.query or parts.fragment or "{" in template.replace("{location}", ""):
        raise ConfigurationError(f"{name} may hold only a base URL with an optional {{location}} placeholder: {shown(template)}")
    return template


def load_settings(environ: Mapping[str, str] | None = None, directory: Path | None = None) -> Settings:
    env = merged_environment(environ, directory)
    defaults = Settings()

    def text(name: str, default: str | None = None) -> str | None:
        value = env.get(name)
        if value is None or not value.strip():
            return default
        return value.strip()

    def number(name: str, default: float, *, minimum: float, integer: bool = False) -> float:
        raw = text(name)
        if raw is None:
            return default
        try:
            value = int(raw) if integer else float(raw)
        except ValueError:
            raise ConfigurationError(f"{name} must be a {'whole ' if integer else ''}number, got {shown(raw)}") from None
        if value < minimum:
            raise ConfigurationError(f"{name} must be at least {minimum}, got {shown(raw)}")
        return value

    endpoints = {
        family: _validate_endpoint(name, text(name, defaults.endpoints[family]) or "")
        for family, name in _ENDPOINT_SETTINGS.items()
    }
    auth = text("DSR_AUTH", defaults.auth) or defaults.auth
    if auth not in ("managed-identity", "default"):
        raise ConfigurationError(f"DSR_AUTH must be 'managed-identity' or 'default', got {shown(auth)}")
    blob_uri = text("DSR_STORAGE__blobServiceUri")
    if blob_uri is not None:
        _validate_endpoint("DSR_STORAGE__blobServiceUri", blob_uri)
    containers = {}
    for name, default in (
        ("DSR_EXPORT_CONTAINER", defaults.export_container),
        ("DSR_STATE_CONTAINER", defaults.state_container),
        ("DSR_AUDIT_CONTAINER", defaults.audit_container),
    ):
        value = text(name, default) or default
        if (
            not (3 <= len(value) <= 63)
            or not value.replace("-", "").isalnum()
            or not value.islower()
            or value.startswith("-")
            or "--" in value
        ):
            raise ConfigurationError(f"{name} is not a valid blob container name: {shown(value)}")
        containers[name] = value
    scope = text("DSR_TOKEN_SCOPE", defaults.token_scope) or defaults.token_scope
    if not scope.startswith("https://"):
        raise ConfigurationError(f"DSR_TOKEN_SCOPE must be an https scope like {defaults.token_scope}")
    otlp = text("OTEL_EXPORTER_OTLP_ENDPOINT")
    if otlp is not None:
        try:
            otlp_parts = urlsplit(otlp)
        except ValueError:
            otlp_parts = urlsplit("")
        if otlp_parts.scheme not in ("http", "https") or not otlp_parts.hostname or otlp_parts.query:
            raise ConfigurationError(
                f"OTEL_EXPORTER_OTLP_ENDPOINT must be an http(s) base URL like http://localhost:4318, got {shown(otlp)}"
            )
    insights = text("APPLICATIONINSIGHTS_CONNECTION_STRING")
    if insights is not None and "instrumentationkey=" not in insights.lower():
        raise ConfigurationError("APPLICATIONINSIGHTS_CONNECTION_STRING must be an Application Insights connection string")
    api_version = text("DSR_ARM_ML_API_VERSION", defaults.arm_ml_api_version) or defaults.arm_ml_api_version
    if not re.fullmatch(r"20\d\d-[01]\d-[0-3]\d(-preview)?", api_version):
        raise ConfigurationError(f"DSR_ARM_ML_API_VERSION must be an api-version like 2024-10-01, got {api_version!r}")
    log_level = (text("DSR_LOG_LEVEL", defaults.log_level) or defaults.log_level).upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigurationError(f"DSR_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {shown(log_level)}")
    return Settings(
        request_queue=text("DSR_REQUEST_QUEUE", defaults.request_queue) or defaults.request_queue,
        outcome_queue=text("DSR_OUTCOME_QUEUE", defaults.outcome_queue) or defaults.outcome_queue,
        servicebus_namespace=text("ServiceBusConnection__fullyQualifiedNamespace"),
        eventgrid_topic_endpoint=_validate_endpoint("DSR_EVENTGRID_TOPIC_ENDPOINT", eg)
        if (eg := text("DSR_EVENTGRID_TOPIC_ENDPOINT"))
        else None,
        storage_connection_string=text("DSR_STORAGE"),
        storage_blob_uri=blob_uri,
        export_container=containers["DSR_EXPORT_CONTAINER"],
        state_container=containers["DSR_STATE_CONTAINER"],
        audit_container=containers["DSR_AUDIT_CONTAINER"],
        endpoints=endpoints,
        arm_ml_api_version=api_version,
        resourcegraph_endpoint=_resource_graph_endpoint(text("DSR_RESOURCEGRAPH_ENDPOINT")),
        token_scope=scope,
        auth=auth,
        managed_identity_client_id=text("DSR_MANAGED_IDENTITY_CLIENT_ID"),
        lease_seconds=int(number("DSR_LEASE_SECONDS", defaults.lease_seconds, minimum=5, integer=True)),
        concurrency=int(number("DSR_CONCURRENCY", defaults.concurrency, minimum=1, integer=True)),
        connect_timeout=number("DSR_CONNECT_TIMEOUT_SECONDS", defaults.connect_timeout, minimum=0.1),
        read_timeout=number("DSR_READ_TIMEOUT_SECONDS", defaults.read_timeout, minimum=0.1),
        max_attempts=int(number("DSR_MAX_ATTEMPTS", defaults.max_attempts, minimum=1, integer=True)),
        max_retry_after=number("DSR_MAX_RETRY_AFTER_SECONDS", defaults.max_retry_after, minimum=0),
        max_response_bytes=int(number("DSR_MAX_RESPONSE_BYTES", defaults.max_response_bytes, minimum=1024, integer=True)),
        response_deadline_seconds=number("DSR_RESPONSE_DEADLINE_SECONDS", defaults.response_deadline_seconds, minimum=1),
        max_delivery_count=int(number("DSR_MAX_DELIVERY_COUNT", defaults.max_delivery_count, minimum=1, integer=True)),
        lro_deadline_seconds=number("DSR_LRO_DEADLINE_SECONDS", defaults.lro_deadline_seconds, minimum=1),
        time_budget_seconds=number("DSR_TIME_BUDGET_SECONDS", defaults.time_budget_seconds, minimum=1),
        checkpoint_seconds=number("DSR_CHECKPOINT_SECONDS", defaults.checkpoint_seconds, minimum=0.1),
        watchdog_idle_seconds=number("DSR_WATCHDOG_IDLE_SECONDS", defaults.watchdog_idle_seconds, minimum=1),
        watchdog_max_requeues=int(number("DSR_WATCHDOG_MAX_REQUEUES", defaults.watchdog_max_requeues, minimum=0, integer=True)),
        download_hours=_download_hours(int(number("DSR_DOWNLOAD_HOURS", defaults.download_hours, minimum=1, integer=True))),
        workspace_concurrency=int(number("DSR_WORKSPACE_CONCURRENCY", defaults.workspace_concurrency, minimum=1, integer=True)),
        log_level=log_level,
        otlp_endpoint=otlp.rstrip("/") if otlp else None,
        appinsights_connection_string=insights,
        appinsights_entra_auth="authorization=aad" in (text("APPLICATIONINSIGHTS_AUTHENTICATION_STRING") or "").lower(),
    )


def _download_hours(hours: int) -> int:
    if hours > 168:  # a user delegation key lives at most seven days
        raise ConfigurationError(f"DSR_DOWNLOAD_HOURS must be at most 168 (seven days), got {hours}")
    return hours


def _resource_graph_endpoint(value: str | None) -> str | None:
    if value is None:
        return None
    if "{location}" in value:
        raise ConfigurationError(f"DSR_RESOURCEGRAPH_ENDPOINT is one global endpoint: no {{location}} placeholder ({value!r})")
    return _validate_endpoint("DSR_RESOURCEGRAPH_ENDPOINT", value)


def require_storage(settings: Settings) -> None:
    if not (settings.storage_connection_string or settings.storage_blob_uri):
        raise ConfigurationError(
            "DSR_STORAGE__blobServiceUri (managed identity) or DSR_STORAGE (a connection string; "
            "UseDevelopmentStorage=true for Azurite) must be set"
        )
