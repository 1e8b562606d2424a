"""The export checkpoint, as typed models: bounded by the work in flight, not by the work done.

It holds the steps not yet run (for a list: the URL of its next page, with its token, and the page
number), each output file's staged block ids, and the counts so far. The ids already written are not in
it: a resumed export reads them back from the files' checkpointed blocks (``ExportTraversal._restore``),
so a record reached again after a redelivery is not written twice.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.contract import Target


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PendingStep(_Model):
    """A step not yet run: a list page (``url`` holds its continuation token) or an item GET."""

    target: Target
    kind: str
    op: Literal["list", "item"]
    url: str
    bindings: list[tuple[str, str]] = Field(default_factory=list)
    item_id: str | None = None
    listed: Any = None
    page: int = 1
    list_url: str | None = None
    inherited: bool = False


class FileState(_Model):
    """An output file so far: the staged blocks that hold its complete lines."""

    blocks: list[str]
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
    version: Literal[2] = 2
    pending: list[PendingStep]
    files: dict[str, FileState]  # "<workspace>|<kind>"
    targets: dict[str, TargetState]
    errors: list[ErrorState]
    calls: int
    # subject scope only: the ids of the subject's parents, and records whose parent was not known yet
    attributed: dict[str, list[str]] = Field(default_factory=dict)
    deferred: list[dict[str, Any]] = Field(default_factory=list)


__all__ = ["ErrorState", "ExportCheckpoint", "FileState", "PendingStep", "TargetState"]
