"""The export checkpoint, as typed models: bounded by the work in flight, not by the work done.

It holds the steps not yet run, each as small as it can be said: its target by index into the request's
targets, its URL only where it cannot be derived from its kind and bindings (a list's later page, whose
URL carries the token), and, for the items a list page still has to GET, that page's URL and their ids
(the page is read again on resume for the listed records, never stored). Each output file is a count of
staged blocks (their ids follow from their index), and the counts so far. The ids already written are not
in it: a resumed export reads them back from the files' checkpointed blocks (``ExportTraversal._restore``),
so a record reached again after a redelivery is not written twice. The traversal runs depth first beyond
a small frontier, so the steps waiting are bounded by the concurrency and the catalog's depth, not by the
size of the workspace. Saved with ``exclude_defaults``: a field left out is its default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PendingStep(_Model):
    """A step not yet run: a list page, an item GET, or (``relist``) the page ``url`` read again for the
    listed records of the items ``ids`` it still has to GET. ``url`` and ``list_url`` are left out where
    they follow from the kind, the bindings and the item id."""

    target: int = 0
    kind: str
    op: Literal["list", "item", "relist"]
    url: str | None = None
    bindings: list[tuple[str, str]] = Field(default_factory=list)
    item_id: str | None = None
    ids: list[str] = Field(default_factory=list)
    listed: Any = None  # only for an item whose URL does not follow from its id (not grouped in a relist)
    page: int = 1
    list_url: str | None = None
    inherited: bool = False


class FileState(_Model):
    """An output file so far: how many staged blocks hold its complete lines (``bundle.block_ids``)."""

    blocks: int
    items: int
    bytes: int


class TargetState(_Model):
    ok: bool
    counts: dict[str, int]
    skipped: dict[str, int]
    secrets: int
    non_finite: int = 0
    matches: dict[str, dict[str, int]] = Field(default_factory=dict)


class ErrorState(_Model):
    code: str
    message: str
    kind: str | None
    target: str | None


class ExportCheckpoint(_Model):
    version: Literal[3]
    pending: list[PendingStep]
    files: dict[str, FileState]  # "<workspace>|<kind>"
    targets: dict[str, TargetState]
    errors: list[ErrorState]
    calls: int
    # subject scope only: the ids of the subject's parents, and records whose parent was not known yet
    attributed: dict[str, list[str]] = Field(default_factory=dict)
    deferred: list[dict[str, Any]] = Field(default_factory=list)


__all__ = ["ErrorState", "ExportCheckpoint", "FileState", "PendingStep", "TargetState"]
