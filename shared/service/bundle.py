"""The export bundle (docs/contract.md §3): per-kind ``.jsonl`` block blobs written as items arrive, manifest last."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass
from typing import Any

from shared.domain.contract import Target
from shared.ports import BlockBlob

__all__ = ["BLOCK_BYTES", "FileEntry", "JsonlWriter", "block_id", "block_ids", "commit_blocks"]

BLOCK_BYTES = 4 * 1024 * 1024


def block_ids(count: int) -> list[str]:
    """The ids of a file's first ``count`` blocks: they follow from their index, so a checkpoint holds a count."""
    return [block_id(i) for i in range(count)]


def block_id(index: int) -> str:
    return base64.b64encode(f"{index:08d}".encode()).decode()


def commit_blocks(blob: BlockBlob, blocks: list[str], rest: bytes) -> None:
    """Make a block blob visible: what never filled a block is one Put Blob (empty files too), not stage +
    commit; otherwise ``rest`` (if any) is staged as the last block and the list committed."""
    if not blocks:
        blob.upload(rest)
        return
    if rest:
        blocks.append(block_id(len(blocks)))
        blob.stage(blocks[-1], rest)
    blob.commit(blocks)


def bundle_prefix(request_id: str) -> str:
    return f"{request_id}/"


def manifest_name(request_id: str) -> str:
    return f"{request_id}/manifest.json"


def jsonl_name(request_id: str, target: Target, kind: str) -> str:
    return f"{request_id}/{target.subscriptionId}/{target.resourceGroup}/{target.workspace}/{kind}.jsonl"


@dataclass(frozen=True)
class FileEntry:
    name: str
    kind: str
    workspace: str
    items: int
    bytes: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "workspace": self.workspace,
            "items": self.items,
            "bytes": self.bytes,
            "sha256": self.sha256,
        }


class JsonlWriter:
    """Thread-safe; memory bounded by one block. Nothing is visible until ``close`` commits the blocks."""

    def __init__(
        self,
        blob: BlockBlob,
        *,
        name: str,
        kind: str,
        workspace: str,
        block_bytes: int = BLOCK_BYTES,
        resume: dict[str, Any] | None = None,
    ) -> None:
        self._blob = blob
        self._name = name
        self._kind = kind
        self._workspace = workspace
        self._block_bytes = block_bytes
        self._lock = threading.Lock()
        self._buffer = bytearray()
        self._blocks: list[str] = block_ids(int(resume["blocks"])) if resume else []
        self._sha = hashlib.sha256()
        self._bytes = int(resume["bytes"]) if resume else 0
        self.items = int(resume["items"]) if resume else 0
        # a resumed file's hash covers blocks another process staged: it is read back at close instead
        self._resumed = bool(resume and resume["blocks"])
        self._closed: FileEntry | None = None

    def checkpoint(self) -> dict[str, Any]:
        """Stage what is buffered and describe the file so far (call only while no one writes)."""
        with self._lock:
            if self._buffer:
                self._stage()
            return {"blocks": len(self._blocks), "items": self.items, "bytes": self._bytes}

    def write(self, line: dict[str, Any]) -> None:
        # allow_nan=False: a bundle parses with a strict parser (records are scrubbed of NaN/Infinity first)
        data = (
            json.dumps(line, ensure_ascii=False, separators=(",", ":"), sort_keys=False, allow_nan=False).encode("utf-8") + b"\n"
        )
        with self._lock:
            if self._closed is not None:
                raise RuntimeError(f"{self._name} is already closed")
            self._buffer += data
            self._sha.update(data)
            self._bytes += len(data)
            self.items += 1
            if len(self._buffer) >= self._block_bytes:
                self._stage()

    def _stage(self) -> None:
        self._blocks.append(block_id(len(self._blocks)))
        self._blob.stage(self._blocks[-1], bytes(self._buffer))
        self._buffer = bytearray()

    def close(self) -> FileEntry:
        with self._lock:
            if self._closed is None:
                commit_blocks(self._blob, self._blocks, bytes(self._buffer))
                self._buffer = bytearray()
                digest = self._sha.hexdigest()
                if self._resumed:
                    digest, size = self._blob.digest()
                    if size != self._bytes:
                        raise RuntimeError(f"{self._name}: {size} bytes committed, {self._bytes} expected")
                self._closed = FileEntry(self._name, self._kind, self._workspace, self.items, self._bytes, digest)
            return self._closed
