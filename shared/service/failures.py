"""What an exception means for an outcome: ``(code, message, permanent)``, with no stack trace or secret.
Used by the delivery policy and by a fan-out child that must record why its workspace failed."""

from __future__ import annotations

from shared.domain.errors import DsrError, PermanentError, RequestRejected
from shared.logs import redact


def describe_failure(exc: BaseException) -> tuple[str, str, bool]:
    """``(code, message, permanent)`` of an exception, fit for an outcome event: no stack trace, no secret."""
    if isinstance(exc, (PermanentError, RequestRejected)):
        return exc.code, redact(exc.message), True
    if isinstance(exc, DsrError):  # RetryableError, ConfigurationError (fixed by ops, then replayed), ...
        return exc.code, redact(exc.message), False
    if is_azure_sdk_error(exc):
        return (
            "azure_service_unavailable",
            f"an Azure service call failed ({type(exc).__name__}); the request is retried from the queue",
            False,
        )
    return "internal_error", f"unexpected {type(exc).__name__}; see the logs", False


def is_azure_sdk_error(exc: BaseException) -> bool:
    """An azure-core ``AzureError`` (storage, Service Bus, identity), recognised without importing an SDK here."""
    return any(cls.__name__ == "AzureError" and cls.__module__ == "azure.core.exceptions" for cls in type(exc).__mro__)
