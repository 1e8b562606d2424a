"""The credential: managed identity (also what the emulator serves locally), or DefaultAzureCredential."""

from __future__ import annotations

from typing import Any

from shared.settings import Settings


def build_credential(settings: Settings) -> Any:
    if settings.auth == "default":
        from azure.identity import DefaultAzureCredential

        if settings.managed_identity_client_id:
            return DefaultAzureCredential(managed_identity_client_id=settings.managed_identity_client_id)
        return DefaultAzureCredential()
    from azure.identity import ManagedIdentityCredential

    if settings.managed_identity_client_id:
        return ManagedIdentityCredential(client_id=settings.managed_identity_client_id)
    return ManagedIdentityCredential()
