"""Blob storage adapters (azure-storage-blob): the bundle store and the append-only audit log."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import (
    BlobBlock,
    BlobSasPermissions,
    BlobServiceClient,
    ContainerClient,
    ContentSettings,
    generate_blob_sas,
)
from requests import Session
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from shared.ports import StateConflict, audit_blob_name
from shared.settings import Settings

_JSON = ContentSettings(content_type="application/json")


def blob_service(settings: Settings, credential: Any | None) -> BlobServiceClient:
    transport = RequestsTransport(session=_session(settings.concurrency * settings.workspace_concurrency), session_owner=False)
    if settings.storage_blob_uri:
        return BlobServiceClient(settings.storage_blob_uri, credential=credential, transport=transport)
    assert settings.storage_connection_string
    return BlobServiceClient.from_connection_string(settings.storage_connection_string, transport=transport)


def _session(connections: int) -> Session:
    """azure-core's own session keeps 10 connections per host; with more blob calls in flight (the export
    threads of each workspace in flight) every call beyond them opened a connection (a TLS handshake) and
    dropped it. This one keeps as many as can be in use; retries stay the SDK's pipeline's, as there. As
    in the Azure ML seam, the environment is not consulted (proxies, .netrc): requests scanned all of it
    on every call, a sixth of the CPU of an export of many small workspaces."""
    session = Session()
    session.trust_env = False
    adapter = HTTPAdapter(
        pool_maxsize=max(10, connections), max_retries=Retry(total=False, redirect=False, raise_on_status=False)
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class _Container:
    """A container created on first use (private: no public access level is ever set)."""

    def __init__(self, service: BlobServiceClient, name: str) -> None:
        self._service = service
        self._name = name
        self._client: ContainerClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> ContainerClient:
        with self._lock:
            if self._client is None:
                client = self._service.get_container_client(self._name)
                try:
                    client.create_container()
                except ResourceExistsError:
                    pass
                self._client = client
            return self._client


class BlobBlockBlob:
    def __init__(self, container: ContainerClient, name: str, content_type: str = "application/x-ndjson") -> None:
        self._blob = container.get_blob_client(name)
        self._content = ContentSettings(content_type=content_type)

    def stage(self, block_id: str, data: bytes) -> None:
        self._blob.stage_block(block_id, data, length=len(data))

    def commit(self, block_ids: list[str]) -> None:
        self._blob.commit_block_list([BlobBlock(block_id) for block_id in block_ids], content_settings=self._content)

    def upload(self, data: bytes) -> None:
        self._blob.upload_blob(data, length=len(data), overwrite=True, content_settings=self._content)

    def digest(self) -> tuple[str, int]:
        sha = hashlib.sha256()
        size = 0
        for chunk in self._blob.download_blob().chunks():
            sha.update(chunk)
            size += len(chunk)
        return sha.hexdigest(), size


class BlobBundleStore:
    """Implements ``shared.ports.BundleStore`` on one container."""

    def __init__(self, service: BlobServiceClient, container: str) -> None:
        self._service = service
        self._container = _Container(service, container)
        self.container_name = container

    def block_blob(self, name: str, content_type: str = "application/x-ndjson") -> BlobBlockBlob:
        return BlobBlockBlob(self._container.client, name, content_type)

    def put_json(self, name: str, document: Any) -> None:
        data = json.dumps(document, ensure_ascii=False, indent=2).encode("utf-8")
        self._container.client.upload_blob(name, data, overwrite=True, content_settings=_JSON)

    def delete(self, name: str) -> None:
        try:
            self._container.client.delete_blob(name)
        except ResourceNotFoundError:
            pass

    def read(self, name: str) -> bytes | None:
        try:
            return self._container.client.download_blob(name).readall()
        except ResourceNotFoundError:
            return None

    def list_names(self, prefix: str) -> list[str]:
        return [b.name for b in self._container.client.list_blobs(name_starts_with=prefix)]

    def chunks(self, name: str) -> Iterator[bytes]:
        yield from self._container.client.download_blob(name).chunks()

    def download_url(self, name: str, *, hours: int) -> tuple[str, str]:
        """A read-only SAS of one blob: a user delegation SAS (signed with a key Azure gives the managed
        identity) when the app reaches storage by identity; an account-key SAS only with a connection string."""
        now = datetime.now(UTC)
        start, expiry = now - timedelta(minutes=5), now + timedelta(hours=hours)
        blob = self._container.client.get_blob_client(name)
        common: dict[str, Any] = {
            "account_name": self._service.account_name,
            "container_name": self.container_name,
            "blob_name": name,
            "permission": BlobSasPermissions(read=True),
            "start": start,
            "expiry": expiry,
        }
        account_key = getattr(self._service.credential, "account_key", None)
        if account_key:
            sas = generate_blob_sas(account_key=account_key, **common)
        else:
            delegation = self._service.get_user_delegation_key(key_start_time=start, key_expiry_time=expiry)
            sas = generate_blob_sas(user_delegation_key=delegation, **common)
        return f"{blob.url}?{sas}", expiry.strftime("%Y-%m-%dT%H:%M:%SZ")


class BlobAuditLog:
    """Implements ``shared.ports.AuditLog``: one append blob per request; lines are only ever appended."""

    def __init__(self, service: BlobServiceClient, container: str) -> None:
        self._container = _Container(service, container)
        self._lock = threading.Lock()

    def append(self, request_id: str, lines: list[dict[str, Any]]) -> None:
        if not lines:
            return
        blob = self._container.client.get_blob_client(audit_blob_name(request_id))
        data = b"".join(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n" for line in lines)
        with self._lock:
            try:
                blob.create_append_blob(if_none_match="*")
            except ResourceExistsError:
                pass
            for start in range(0, len(data), 4 * 1024 * 1024):
                blob.append_block(data[start : start + 4 * 1024 * 1024])


class BlobStateBackend:
    """Implements ``shared.ports.StateBackend``: one JSON blob per request, ETag conditions on every write."""

    def __init__(self, service: BlobServiceClient, container: str) -> None:
        self._container = _Container(service, container)

    @staticmethod
    def _name(request_id: str) -> str:
        return f"{request_id}.json"

    def read(self, request_id: str) -> tuple[dict[str, Any], str] | None:
        try:
            downloader = self._container.client.download_blob(self._name(request_id))
        except ResourceNotFoundError:
            return None
        return json.loads(downloader.readall()), str(downloader.properties.etag)

    def create(self, request_id: str, document: dict[str, Any]) -> str:
        try:
            blob = self._container.client.get_blob_client(self._name(request_id))
            result = blob.upload_blob(json.dumps(document).encode(), overwrite=False, content_settings=_JSON)
        except ResourceExistsError:
            raise StateConflict(request_id) from None
        return str(result["etag"])

    def replace(self, request_id: str, document: dict[str, Any], etag: str) -> str:
        blob = self._container.client.get_blob_client(self._name(request_id))
        try:
            result = blob.upload_blob(
                json.dumps(document).encode(),
                overwrite=True,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
                content_settings=_JSON,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            raise StateConflict(request_id) from None
        return str(result["etag"])

    def list_ids(self) -> list[str]:
        return [b.name.removesuffix(".json") for b in self._container.client.list_blobs() if b.name.endswith(".json")]
