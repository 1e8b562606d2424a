"""Export: request + catalog -> GETs, each record streamed into the bundle as it arrives.

The export is a pipeline of parts, each in its own module, composed here:

- ``traversal.py``: the rules: from the catalog, a step (one GET) and what it read, the steps that follow;
- ``scheduler.py``: runs the steps in lanes (one per service limit) on a bounded pool, in depth-first pre-order;
- ``subject_scope.py``: in subject scope, whether a record is the subject's, and by what;
- ``export_writer.py``: the ``.jsonl`` files, each record written once;
- ``checkpoint.py``: the typed checkpoint, and the steps waiting encoded into it and decoded from it.

``ExportTraversal`` runs one step (``_run_step``: the GET, then the rules for what it read), hands what a record
is to the subject scope and the writer, and keeps the counts and errors of each workspace (``TargetResult``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import shared.telemetry as telemetry
from shared.domain.catalog import Catalog, matches_where
from shared.domain.contract import DsrRequest, Target
from shared.domain.errors import AzureMLError, BadResponseError, InvalidIdError, NotFoundError, UntrustedUrlError
from shared.domain.outcome import error_entry
from shared.domain.scrub import ScrubCounts, scrub_record
from shared.domain.subject import SubjectMatcher
from shared.ports import WAIT_ASIDE, AzureML, BundleStore
from shared.service.bundle import FileEntry
from shared.service.checkpoint import ErrorState, ExportCheckpoint, TargetState, decode_pending, encode_pending
from shared.service.export_writer import ExportWriter
from shared.service.listing import Endpoints, record_id, workspace_problem
from shared.service.scheduler import Lanes
from shared.service.subject_scope import OWNED, SubjectScope, tally
from shared.service.traversal import Problem, Step, TraversalRules

log = logging.getLogger("dsr.export")


@dataclass
class ErrorRecord:
    code: str
    message: str
    kind: str | None
    target: str | None

    def as_dict(self) -> dict[str, Any]:
        return error_entry(self.code, self.message, kind=self.kind, target=self.target)


@dataclass
class TargetResult:
    target: Target
    ok: bool = True
    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    secrets_scrubbed: int = 0
    non_finite: int = 0  # NaN / Infinity written as null
    matches: dict[str, dict[str, int]] = field(default_factory=dict)  # subject scope: kind -> scanned/by type


@dataclass
class ExportResult:
    targets: list[TargetResult]
    files: list[FileEntry]
    errors: list[ErrorRecord]
    calls: int
    suspended: bool = False
    checkpoint: dict[str, Any] | None = None


class ExportTraversal:
    def __init__(
        self,
        request: DsrRequest,
        *,
        catalog: Catalog,
        endpoints: Endpoints,
        aml: AzureML,
        store: BundleStore,
        concurrency: int = 8,
        should_stop: Callable[[], bool] | None = None,
        checkpoint: dict[str, Any] | None = None,
        on_checkpoint: Callable[[dict[str, Any]], None] | None = None,
        checkpoint_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        frontier: int | None = None,
    ) -> None:
        self.request = request
        self.catalog = catalog
        self.aml = aml
        self.concurrency = max(1, concurrency)
        self.frontier = frontier
        requested = set(request.kinds)
        matcher = SubjectMatcher(request.subject, catalog) if request.scope == "subject" and request.subject else None
        self.scope = SubjectScope(matcher, catalog, requested) if matcher is not None else None
        self.rules = TraversalRules(
            catalog, endpoints, requested=requested, needed=catalog.closure(request.kinds, subject_scope=matcher is not None)
        )
        self.writer = ExportWriter(request.requestId, store, secret_names=catalog.secret_field_names, dedupe=matcher is not None)
        self._index = {t.resource_id: i for i, t in enumerate(request.targets)}
        self._lock = threading.Lock()
        self._results: dict[str, TargetResult] = {}
        self.errors: list[ErrorRecord] = []
        self.calls = 0
        self._should_stop = should_stop
        self._resume_from = checkpoint
        self._on_checkpoint = on_checkpoint
        self._checkpoint_seconds = checkpoint_seconds
        self._clock = clock

    # -- the whole run --------------------------------------------------------------------------
    def run(self) -> ExportResult:
        resume = self._resume_checkpoint()
        if resume is not None:
            steps = self._restore(resume)
        else:
            steps = []
            for target in self.request.targets:
                self._results[target.resource_id] = TargetResult(target)
                steps.append(self.rules.workspace_step(target))
        lanes = Lanes(
            self._run_step,
            self.rules.lane,
            first=self.rules.is_next_page,
            concurrency=self.concurrency,
            frontier=self.frontier,
            should_stop=self._should_stop,
            checkpoint=self._save if self._on_checkpoint is not None else None,
            checkpoint_seconds=self._checkpoint_seconds,
            clock=self._clock,
            thread_name="dsr-export",
            wait_aside=WAIT_ASIDE,  # a step waiting out a Retry-After lends its slot
        )
        waiting = lanes.run(steps)
        if waiting is not None:
            snapshot = self._save(waiting)
            return ExportResult(list(self._results.values()), [], self.errors, self.calls, suspended=True, checkpoint=snapshot)
        self._resolve_deferred()
        files = self.writer.close(lambda rid: self._results[rid].ok, self.concurrency)
        return ExportResult(list(self._results.values()), files, self.errors, self.calls)

    # -- checkpoints ------------------------------------------------------------------------------
    def _save(self, pending: list[Step]) -> dict[str, Any]:
        """The checkpoint of a quiesced run, saved (when there is a saver) and returned."""
        snapshot = self._snapshot(pending).model_dump(mode="json", exclude_defaults=True)
        if self._on_checkpoint is not None:
            self._on_checkpoint(snapshot)
            size = len(json.dumps(snapshot, separators=(",", ":")))
            log.info("checkpoint saved", extra={"bytes": size, "pending": len(pending)})
        return snapshot

    def _resume_checkpoint(self) -> ExportCheckpoint | None:
        if not self._resume_from:
            return None
        try:
            return ExportCheckpoint.model_validate(self._resume_from)
        except ValueError:
            # a checkpoint of an older version: start again (each file is rewritten from its first block)
            log.warning("checkpoint of another version ignored: the export starts again")
            return None

    def _snapshot(self, pending: list[Step]) -> ExportCheckpoint:
        index = self._index
        return ExportCheckpoint(
            version=3,
            pending=encode_pending(pending, self.rules, index),
            files=self.writer.states(index),
            targets={
                rid: TargetState(
                    ok=r.ok,
                    counts=r.counts,
                    skipped=r.skipped,
                    secrets=r.secrets_scrubbed,
                    non_finite=r.non_finite,
                    matches=r.matches,
                )
                for rid, r in self._results.items()
            },
            errors=[ErrorState(**e.as_dict()) for e in self.errors],
            calls=self.calls,
            attributed={f"{index[rid]}|{kind}": sorted(ids) for (rid, kind), ids in self.scope.attributed.items()}
            if self.scope
            else {},
            deferred=self.scope.deferred if self.scope else [],
        )

    def _restore(self, checkpoint: ExportCheckpoint) -> list[Step]:
        targets = self.request.targets
        by_id = {t.resource_id: t for t in targets}
        for rid, raw in checkpoint.targets.items():
            self._results[rid] = TargetResult(
                by_id[rid],
                ok=raw.ok,
                counts=dict(raw.counts),
                skipped=dict(raw.skipped),
                secrets_scrubbed=raw.secrets,
                matches={k: dict(v) for k, v in raw.matches.items()},
                non_finite=raw.non_finite,
            )
        self.writer.restore({self._file_key(key): state for key, state in checkpoint.files.items()})
        self.errors = [ErrorRecord(e.code, e.message, e.kind, e.target) for e in checkpoint.errors]
        self.calls = checkpoint.calls
        if self.scope is not None:
            keyed = ((self._file_key(key), ids) for key, ids in checkpoint.attributed.items())
            self.scope.restore({(t.resource_id, kind): ids for (t, kind), ids in keyed}, checkpoint.deferred)
        steps = decode_pending(checkpoint.pending, self.rules, targets)
        for step in steps:
            # the items it will GET count as seen, so that a record reached again is not fetched twice
            for rid in (step.item_id,) if step.op == "item" and step.item_id else step.only:
                self.writer.first_sight(step.target, step.kind, rid, step.inherited)
        return steps

    def _file_key(self, key: str) -> tuple[Target, str]:
        """``<target index>|<kind>`` -> (target, kind)."""
        index, kind = key.split("|", 1)
        return self.request.targets[int(index)], kind

    # -- one step ---------------------------------------------------------------------------------
    @telemetry.in_workspace(lambda self, step: step.target)
    def _run_step(self, step: Step) -> list[Step]:
        with self._lock:
            self.calls += 1
        if step.op == "relist":
            try:
                body = self.aml.get(step.url).body
            except AzureMLError:  # the page is gone, or its token expired: the items are still fetched
                body = None
            return self._relist(step, body)
        try:
            response = self.aml.get(step.url)
        except NotFoundError:
            return self._not_found(step)
        except AzureMLError as exc:
            if step.kind == "workspace":
                self._fail_target(step.target, exc.code, f"the workspace could not be read: {exc.message}")
            else:
                self._error(step, exc.code, exc.message)
            return []
        if step.kind == "workspace":
            return self._start_target(step, response.body)
        if step.op == "list":
            return self._list_page(step, response.body)
        record = response.body
        if step.listed is not None and isinstance(record, dict) and isinstance(step.listed, dict):
            record = {**step.listed, **record}
        return self._accept(step.target, step.kind, record, step.item_id, dict(step.bindings), step.url, inherited=step.inherited)

    def _not_found(self, step: Step) -> list[Step]:
        if step.kind == "workspace":
            self._fail_target(step.target, "workspace_not_found", "the workspace does not exist (or the identity cannot see it)")
        elif step.op == "list" and self.catalog.kinds[step.kind].source is None:
            self._error(step, "list_not_found", "the list endpoint answered 404")
        else:
            # gone between list and GET, a dangling reference, or a parent without children: nothing to export
            result = self._results[step.target.resource_id]
            with self._lock:
                result.skipped[step.kind] = result.skipped.get(step.kind, 0) + 1
        return []

    def _start_target(self, step: Step, body: Any) -> list[Step]:
        problem = workspace_problem(step.target, body)
        if problem:
            self._fail_target(step.target, *problem)
            return []
        self.writer.open(step.target, self.request.kinds)
        steps = self._accept(step.target, "workspace", body, None, {}, step.url)
        return steps + self.rules.root_lists(step.target)

    def _list_page(self, step: Step, body: Any) -> list[Step]:
        kind = self.catalog.kinds[step.kind]
        if not isinstance(body, dict) or "value" not in body or not isinstance(body["value"] or [], list):
            self._error(step, "bad_response", "a list page is not a JSON object with a 'value' array")
            return []
        steps: list[Step] = []
        bindings = dict(step.bindings)
        for record in body.get("value") or []:
            if kind.where and not matches_where(record, kind.where):
                continue
            rid = record_id(kind, record)
            if not self.writer.first_sight(step.target, step.kind, rid):
                continue
            key = self.rules.fetch_key(step, record)
            if key is not None:
                try:
                    url = self.rules.item_url(step, {**bindings, "id": key})
                except InvalidIdError as exc:
                    self._error(step, exc.code, exc.message)
                    continue
                # the listed record rides in the step (and in a checkpoint in state): scrubbed before it is kept;
                # its secrets are counted when the merged record is written
                listed, _ = scrub_record(record, self.catalog.secret_field_names)
                steps.append(
                    Step(
                        step.target,
                        step.kind,
                        "item",
                        url,
                        step.bindings,
                        rid,
                        listed,
                        inherited=step.inherited,
                        listed_from=step.url,
                    )
                )
                continue
            steps += self._accept(
                step.target, step.kind, record, rid, bindings, self.rules.source_url(step, record), inherited=step.inherited
            )
        try:
            next_page = self.rules.next_page(step, body)
        except (BadResponseError, UntrustedUrlError) as exc:  # paging_loop, untrusted_url: this list stops here
            self._error(step, exc.code, exc.message)
            next_page = None
        if next_page:
            # after the children of this page in depth-first order (the scheduler starts it early while few wait)
            steps.append(next_page)
        return steps

    def _relist(self, step: Step, body: Any) -> list[Step]:
        """A page read again after a resume, and the item GETs it still owed, run here one after the other,
        each with its listed record (an item no longer on the page is still fetched, without one). Run here,
        not queued: queued, they could be owed again by the next checkpoint, and a run that stops every few
        steps would read the page again and again without progress."""
        kind = self.catalog.kinds[step.kind]
        listed: dict[str, Any] = {}
        records = body.get("value") if isinstance(body, dict) else None
        for record in records if isinstance(records, list) else []:
            rid = record_id(kind, record)
            if rid in step.only and isinstance(record, dict):
                listed[rid] = scrub_record(record, self.catalog.secret_field_names)[0]
        steps: list[Step] = []
        for rid in step.only:
            item = Step(step.target, step.kind, "item", "", step.bindings, rid, listed.get(rid), inherited=step.inherited)
            url = self.rules.derived_url(item)
            if url is not None:
                steps += self._run_step(replace(item, url=url))
        return steps

    # -- one record -------------------------------------------------------------------------------
    def _accept(
        self,
        target: Target,
        kind_name: str,
        record: Any,
        rid: str | None,
        bindings: dict[str, str],
        source: str,
        *,
        inherited: bool = False,
    ) -> list[Step]:
        """One record is in: write it if it was asked for (and, in subject scope, belongs to the subject),
        and start whatever hangs off it."""
        rid = rid or record_id(self.catalog.kinds[kind_name], record)
        match = None
        if self.scope is not None:
            verdict = self.scope.judge(target, kind_name, record, rid, source, inherited=inherited)
            if verdict.deferred:
                return self._children(target, kind_name, record, bindings, inherited=False)
            match = verdict.match
        if kind_name in self.rules.requested:
            if self.scope is not None:
                with self._lock:
                    tally(self._results[target.resource_id].matches, kind_name, match)
            if self.scope is None or match:
                self._write(target, kind_name, rid, source, record, match)
        return self._children(target, kind_name, record, bindings, inherited=match in OWNED)

    def _children(self, target: Target, kind_name: str, record: Any, bindings: dict[str, str], *, inherited: bool) -> list[Step]:
        steps, problems = self.rules.children(
            target, kind_name, record, bindings, inherited=inherited, first_sight=self.writer.first_sight
        )
        for problem in problems:
            self._problem(target, problem)
        return steps

    def _write(self, target: Target, kind_name: str, rid: str, source: str, record: Any, match: str | None) -> None:
        scrubbed = self.writer.write(target, kind_name, rid, source, record, match)
        if scrubbed is not None:
            self._count(target, kind_name, scrubbed)

    def _count(self, target: Target, kind_name: str, scrubbed: ScrubCounts) -> None:
        result = self._results[target.resource_id]
        with self._lock:
            result.counts[kind_name] = result.counts.get(kind_name, 0) + 1
            result.secrets_scrubbed += scrubbed.secrets
            result.non_finite += scrubbed.non_finite

    def _resolve_deferred(self) -> None:
        """Subject scope, at the end: the records kept aside whose parent turned out to be the subject's."""
        if self.scope is None:
            return
        by_id = {t.resource_id: t for t in self.request.targets}
        for entry, match in self.scope.resolve():
            target = by_id[entry["target"]]
            tally(self._results[entry["target"]].matches, entry["kind"], match)
            if match and self._results[entry["target"]].ok:
                self._write(target, entry["kind"], entry["id"], entry["source"], entry["record"], match)
                result = self._results[entry["target"]]  # and what scrubbing took out when it was kept aside
                result.secrets_scrubbed += int(entry.get("secrets", 0))
                result.non_finite += int(entry.get("nonFinite", 0))

    # -- errors ----------------------------------------------------------------------------------
    def _fail_target(self, target: Target, code: str, message: str) -> None:
        with self._lock:
            self._results[target.resource_id].ok = False
            self.errors.append(ErrorRecord(code, message, "workspace", target.resource_id))

    def _error(self, step: Step, code: str, message: str) -> None:
        self._problem(step.target, Problem(step.kind, code, message))

    def _problem(self, target: Target, problem: Problem) -> None:
        log.warning("step failed", extra={"kind": problem.kind, "code": problem.code})
        with self._lock:
            self.errors.append(ErrorRecord(problem.code, problem.message, problem.kind, target.resource_id))


__all__ = ["Endpoints", "ErrorRecord", "ExportResult", "ExportTraversal", "TargetResult"]
