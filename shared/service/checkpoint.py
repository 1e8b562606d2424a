"""The checkpoints, as typed models. An export's is bounded by the work in flight, not by the work done.

It holds the steps not yet run, each as small as it can be said: its target by index into the request's
targets, its URL only where it cannot be derived from its kind and bindings (a list's later page, whose
URL carries the token), and, for the items a list page still has to GET, that page's URL and their ids
(the page is read again on resume for the listed records, never stored). Each output file is a count of
staged blocks (their ids follow from their index), and the counts so far. The ids already written are not
in it: a resumed export reads them back from the files' checkpointed blocks (``ExportWriter.restore``),
so a record reached again after a redelivery is not written twice. The steps wait in depth-first pre-order
(``scheduler.py``), so those waiting are bounded by the concurrency, the catalog's depth and the page size,
not by the size of the workspace. Saved with ``exclude_defaults``: a field left out is its default.

``encode_pending`` and ``decode_pending`` turn the traversal's steps into ``PendingStep`` and back.

A delete's (``DeleteCheckpoint``, saved under ``delete``) is its whole plan with each item's result so far
(``plan_checkpoint``, ``restore_plan``): a resumed delete keeps its plan.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.contract import Target
from shared.domain.urls import with_query
from shared.service.delete_plan import DeletePlan, PlannedItem
from shared.service.traversal import Step, TraversalRules

log = logging.getLogger("dsr.export")


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


class DeleteCheckpoint(_Model):
    """A delete's plan (``planned``: saved before the first DELETE; ``deleted``: after the last)."""

    phase: Literal["planned", "deleted"]
    items: list[PlannedItem]
    errors: list[dict[str, Any]]
    failedTargets: list[str]
    review: list[dict[str, Any]] = Field(default_factory=list)
    scanned: int = 0


def plan_checkpoint(plan: DeletePlan, phase: Literal["planned", "deleted"]) -> dict[str, Any]:
    """The checkpoint of a delete (what the request's state holds under ``delete``)."""
    return DeleteCheckpoint(
        phase=phase,
        items=plan.items,
        errors=plan.errors,
        failedTargets=sorted(plan.failed_targets),
        review=plan.review,
        scanned=plan.scanned,
    ).model_dump(mode="json")


def restore_plan(saved: dict[str, Any]) -> tuple[DeletePlan, str]:
    """A delete's plan and phase from its checkpoint."""
    state = DeleteCheckpoint.model_validate(saved)
    return DeletePlan(state.items, list(state.errors), set(state.failedTargets), list(state.review), state.scanned), state.phase


def encode_pending(pending: Iterable[Step], rules: TraversalRules, index: dict[str, int]) -> list[PendingStep]:
    """The steps waiting, each as small as it can be said: the items one page still has to GET become one
    ``relist`` of that page (their listed records are read again on resume, not stored). ``index``: a
    target's resource id -> its index in the request."""
    states: list[PendingStep] = []
    relists: dict[tuple[Any, ...], PendingStep] = {}
    for s in pending:
        derived = rules.derived_url(s)
        first = rules.derived_url(replace(s, op="list", page=1))
        tokens = rules.tokens(s.kind)
        if s.op == "item" and s.listed is not None and s.listed_from and s.item_id and s.url == derived:
            key = (s.target.resource_id, s.kind, s.listed_from, s.bindings, s.inherited)
            if key in relists:
                relists[key].ids.append(s.item_id)
                continue
            relists[key] = PendingStep(
                target=index[s.target.resource_id],
                kind=s.kind,
                op="relist",
                url=_short(s.listed_from, first, tokens),
                bindings=list(s.bindings),
                ids=[s.item_id],
                inherited=s.inherited,
            )
            states.append(relists[key])
            continue
        if s.op == "relist":  # restored, not run yet
            states.append(
                PendingStep(
                    target=index[s.target.resource_id],
                    kind=s.kind,
                    op="relist",
                    url=_short(s.url, first, tokens),
                    bindings=list(s.bindings),
                    ids=list(s.only),
                    inherited=s.inherited,
                )
            )
            continue
        states.append(
            PendingStep(
                target=index[s.target.resource_id],
                kind=s.kind,
                op="list" if s.op == "list" else "item",
                url=None if s.url == derived else _short(s.url, first, tokens) if s.op == "list" else s.url,
                bindings=list(s.bindings),
                item_id=s.item_id,
                page=s.page,
                list_url=None if s.list_url in (None, first) else s.list_url,
                listed=s.listed,  # an item whose URL does not follow from its id keeps its listed record
                inherited=s.inherited,
            )
        )
    return states


def decode_pending(pending: Iterable[PendingStep], rules: TraversalRules, targets: Sequence[Target]) -> list[Step]:
    """The steps of a checkpoint again, their URLs derived where the checkpoint left them out."""
    steps: list[Step] = []
    for p in pending:
        target = targets[p.target]
        step = Step(target, p.kind, p.op, "", tuple(p.bindings), p.item_id, p.listed, p.page, p.list_url, p.inherited)
        first = rules.derived_url(replace(step, op="list", page=1))
        url = (
            _long(p.url, first, rules.tokens(p.kind))
            if p.op in ("list", "relist") and p.url
            else p.url or rules.derived_url(step)
        )
        url = url or (first if p.op == "relist" else None)
        if url is None:  # a checkpoint that does not fit this catalog: nothing to run for this step
            log.warning("a checkpointed step without a URL skipped", extra={"kind": p.kind})
            continue
        steps.append(replace(step, url=url, list_url=p.list_url or (first if p.op == "list" else None), only=tuple(p.ids)))
    return steps


def _short(url: str, first: str | None, tokens: tuple[str, ...]) -> str | None:
    """A page's URL in a checkpoint: nothing for its list's first page; ``~`` and the token for the first
    page's URL with a continuation token; else what follows the list's path after a ``+`` (a nextLink's
    query); in full when it is on another path."""
    if url == first:
        return None
    token = next((v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True) if tokens and k == tokens[0]), None)
    if first and token and with_query(first, dict.fromkeys(tokens, token), override=True) == url:
        return "~" + token
    base = first.split("?", 1)[0] if first else None
    return "+" + url[len(base) :] if base and url.startswith(base) else url


def _long(url: str, first: str | None, tokens: tuple[str, ...]) -> str:
    if url.startswith("~") and first:
        return with_query(first, dict.fromkeys(tokens, url[1:]), override=True)
    return first.split("?", 1)[0] + url[1:] if url.startswith("+") and first else url


__all__ = [
    "DeleteCheckpoint",
    "ErrorState",
    "ExportCheckpoint",
    "FileState",
    "PendingStep",
    "TargetState",
    "decode_pending",
    "encode_pending",
    "plan_checkpoint",
    "restore_plan",
]
