"""The export's writer: one ``.jsonl`` file per workspace and kind, each record written once.

It opens a workspace's files when the workspace is known, writes a record as a bundle line (scrubbed of
secrets and NaN), tells whether an id turns up for the first time (so that nothing is fetched or written
twice), describes its files for a checkpoint and, on resume, reopens them and reads back the ids they hold.
"""

from __future__ import annotations

import contextvars
import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared.domain.contract import Target
from shared.domain.scrub import ScrubCounts, scrub_record
from shared.domain.urls import strip_query
from shared.ports import BundleStore
from shared.service.bundle import FileEntry, JsonlWriter, block_ids, jsonl_name
from shared.service.checkpoint import FileState


class ExportWriter:
    """Thread-safe. ``dedupe`` (subject scope): a record reached twice (by two paths) is written once, and an
    item first reached from someone else's record is reached again from the subject's (``first_sight``)."""

    def __init__(self, request_id: str, store: BundleStore, *, secret_names: frozenset[str], dedupe: bool) -> None:
        self.request_id = request_id
        self.store = store
        self.secret_names = secret_names
        self.dedupe = dedupe
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], set[str]] = {}
        self._written: dict[tuple[str, str], set[str]] = {}
        self._files: dict[tuple[str, str], JsonlWriter] = {}

    def open(self, target: Target, kinds: Sequence[str]) -> None:
        for kind in kinds:
            name = jsonl_name(self.request_id, target, kind)
            self._files[(target.resource_id, kind)] = JsonlWriter(
                self.store.block_blob(name), name=name, kind=kind, workspace=target.resource_id
            )

    def first_sight(self, target: Target, kind: str, rid: str, inherited: bool = False) -> bool:
        """True the first time an id turns up. In subject scope, an item first reached from someone else's
        record (not inherited) is reached again when one of the subject's records refers to it too (a module
        shared by two people's pipelines), under the key ``+id``."""
        with self._lock:
            seen = self._seen.setdefault((target.resource_id, kind), set())
            if self.dedupe and inherited:
                key = f"+{rid}"
                if key in seen:
                    return False
                seen.add(key)
                if rid in seen:
                    return True
            if rid in seen:
                return False
            seen.add(rid)
            return True

    def write(self, target: Target, kind: str, rid: str, source: str, record: Any, match: str | None) -> ScrubCounts | None:
        """Write one record; what scrubbing took out of it, or None when it was written already (subject scope)."""
        if self.dedupe:
            with self._lock:
                written = self._written.setdefault((target.resource_id, kind), set())
                if rid in written:
                    return None
                written.add(rid)
        data, scrubbed = scrub_record(record, self.secret_names)
        line: dict[str, Any] = {"kind": kind, "id": rid, "source": strip_query(source), "data": data}
        if match:
            line["matchedBy"] = match
        self._files[(target.resource_id, kind)].write(line)
        return scrubbed

    # -- checkpoints --------------------------------------------------------------------------------
    def states(self, index: dict[str, int]) -> dict[str, FileState]:
        """Stage what is buffered and describe each file, keyed ``<target index>|<kind>`` (call only while no one writes)."""
        return {f"{index[rid]}|{kind}": FileState(**writer.checkpoint()) for (rid, kind), writer in self._files.items()}

    def restore(self, files: dict[tuple[Target, str], FileState]) -> None:
        """Reopen checkpointed files. What was written before the checkpoint: its blocks, committed and read back
        (never what a killed run staged after it), so that a record reached again is not written twice."""
        for (target, kind), state in files.items():
            rid = target.resource_id
            name = jsonl_name(self.request_id, target, kind)
            blob = self.store.block_blob(name)
            self._files[(rid, kind)] = JsonlWriter(blob, name=name, kind=kind, workspace=rid, resume=state.model_dump())
            ids: set[str] = set()
            if state.blocks:
                blob.commit(block_ids(state.blocks))
                for raw_line in (self.store.read(name) or b"").splitlines():
                    ids.add(str(json.loads(raw_line)["id"]))
            self._seen[(rid, kind)] = set(ids)
            self._written[(rid, kind)] = ids

    def close(self, keep: Callable[[str], bool], concurrency: int) -> list[FileEntry]:
        """Commit the files of the workspaces ``keep`` names (those that succeeded), side by side (each commit
        is a round trip)."""
        writers = [writer for (rid, _kind), writer in self._files.items() if keep(rid)]
        if len(writers) <= 1:
            return [writer.close() for writer in writers]
        with ThreadPoolExecutor(max_workers=min(concurrency, len(writers)), thread_name_prefix="dsr-commit") as pool:
            closing = [pool.submit(contextvars.copy_context().run, writer.close) for writer in writers]
            return [future.result() for future in closing]


__all__ = ["ExportWriter"]
