"""Reading what the app wrote (bundles in Azurite) and recording what it published."""

from __future__ import annotations

import json
from typing import Any

from azure.storage.blob import BlobServiceClient

from shared.bootstrap import build_services
from shared.settings import load_settings
from tools.emulator import DEMO_LOCATION, DEMO_RESOURCE_GROUP, DEMO_SUBSCRIPTION, DEMO_WORKSPACE

DEMO_TARGET = {
    "subscriptionId": DEMO_SUBSCRIPTION,
    "resourceGroup": DEMO_RESOURCE_GROUP,
    "workspace": DEMO_WORKSPACE,
    "location": DEMO_LOCATION,
}


class RecordingPublisher:
    """A fake outcome publisher (implements shared.ports.OutcomePublisher)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def publish(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def app_services(publisher: RecordingPublisher) -> Any:
    """The app's real services, from the settings the environment holds now (after any fixture changed them),
    publishing to ``publisher``."""
    return build_services(load_settings(), publishers=[publisher])


def blob_container(env: dict[str, str], name_setting: str = "DSR_EXPORT_CONTAINER") -> Any:
    return BlobServiceClient.from_connection_string(env["DSR_STORAGE"]).get_container_client(env[name_setting])


def read_bundle(env: dict[str, str], request_id: str) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The manifest and, per file name, the parsed lines."""
    container = blob_container(env)
    manifest = json.loads(container.download_blob(f"{request_id}/manifest.json").readall())
    files = {}
    for entry in manifest["files"]:
        raw = container.download_blob(entry["name"]).readall()
        files[entry["name"]] = [json.loads(line) for line in raw.splitlines() if line]
    return manifest, files


def audit_lines(env: dict[str, str], request_id: str) -> list[dict[str, Any]]:
    """The parsed lines of a request's audit blob (``{requestId}.jsonl`` in ``DSR_AUDIT_CONTAINER``)."""
    raw = blob_container(env, "DSR_AUDIT_CONTAINER").download_blob(f"{request_id}.jsonl").readall()
    return [json.loads(line) for line in raw.splitlines()]
