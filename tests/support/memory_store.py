"""An in-memory ``shared.ports.BundleStore`` for the pure tests of the readable export (the page's rendering
and the zip's layout); the integration tests use Azurite."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any


class MemoryBlob:
    def __init__(self, store: MemoryStore, name: str, content_type: str) -> None:
        self.store, self.name, self.content_type = store, name, content_type
        self.staged: dict[str, bytes] = {}

    def stage(self, block_id: str, data: bytes) -> None:
        self.staged[block_id] = bytes(data)

    def commit(self, block_ids: list[str]) -> None:
        self.store.blobs[self.name] = b"".join(self.staged[b] for b in block_ids)
        self.store.content_types[self.name] = self.content_type

    def upload(self, data: bytes) -> None:
        self.store.blobs[self.name] = bytes(data)
        self.store.content_types[self.name] = self.content_type

    def digest(self) -> tuple[str, int]:
        data = self.store.blobs[self.name]
        return hashlib.sha256(data).hexdigest(), len(data)


class MemoryStore:
    def __init__(self, chunk_bytes: int = 7) -> None:
        self.blobs: dict[str, bytes] = {}
        self.content_types: dict[str, str] = {}
        self.chunk_bytes = chunk_bytes  # small chunks: lines are split across them, as they are in blob storage

    def block_blob(self, name: str, content_type: str = "application/x-ndjson") -> MemoryBlob:
        return MemoryBlob(self, name, content_type)

    def put_json(self, name: str, document: Any) -> None:
        self.blobs[name] = json.dumps(document, ensure_ascii=False, indent=2).encode()

    def delete(self, name: str) -> None:
        self.blobs.pop(name, None)

    def read(self, name: str) -> bytes | None:
        return self.blobs.get(name)

    def list_names(self, prefix: str) -> list[str]:
        return sorted(n for n in self.blobs if n.startswith(prefix))

    def chunks(self, name: str) -> Iterator[bytes]:
        data = self.blobs[name]
        for start in range(0, len(data), self.chunk_bytes):
            yield data[start : start + self.chunk_bytes]

    def download_url(self, name: str, *, hours: int) -> tuple[str, str]:
        return f"memory://{name}?sig=not-a-real-signature", "2099-01-01T00:00:00Z"

    def add_jsonl(self, name: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
        """Write a bundle file and return its manifest entry."""
        data = b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)
        self.blobs[name] = data
        return {"name": name, "items": len(lines), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
