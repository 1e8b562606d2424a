"""Export traversal: request + catalog -> GETs, each item streamed into the bundle as it arrives.

The traversal is a queue of small steps (a list page, an item GET) run on a bounded thread pool. A
step returns the steps it makes possible, so dependent calls start as soon as their parent page is
in (not level by level). The steps wait in depth-first pre-order: a step's children come before the
steps after it, and a list's next page after the children of its page. While at most ``frontier``
steps wait, next pages start first (a list's pages are the critical path) and then the first in that
order; once more wait, strictly the first in order, so the traversal finishes what it opened before it
opens more, and the steps waiting (and the checkpoint that holds them) stay bounded by the concurrency,
the catalog's depth and the page size, whatever the size of the workspace.

Each service limit is a lane (ARM per subscription, each data-plane family per region, as the rate governor
keys its limiters) with at most ``concurrency`` steps in flight, and all lanes together at most
``2 * concurrency - 1``: a lane that is paced or throttled holds at most about half the slots, so it never
starves the calls to another service, and ``concurrency`` 1 is a plain sequential loop.
"""

from __future__ import annotations

import bisect
import contextvars
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import shared.telemetry as telemetry
from shared.domain.catalog import Catalog, Kind, matches_where, scalar_ids
from shared.domain.contract import DsrRequest, Target
from shared.domain.errors import AzureMLError, BadResponseError, InvalidIdError, NotFoundError, UntrustedUrlError
from shared.domain.subject import SubjectMatcher
from shared.domain.urls import strip_query, with_query
from shared.ports import AzureML, BundleStore
from shared.service.bundle import FileEntry, JsonlWriter, block_ids, jsonl_name, scrub_record
from shared.service.checkpoint import ErrorState, ExportCheckpoint, FileState, PendingStep, TargetState
from shared.service.listing import Endpoints, next_page_url, record_id, url_for, workspace_problem

log = logging.getLogger("dsr.export")


@dataclass(frozen=True)
class Step:
    target: Target
    kind: str
    op: Literal["list", "item", "relist"]  # relist: a page read again for the listed records of the items ``only``
    url: str
    bindings: tuple[tuple[str, str], ...] = ()
    item_id: str | None = None
    listed: Any = None  # the list record an item GET completes
    page: int = 1
    list_url: str | None = None  # first page of the list, for continuation tokens
    inherited: bool = False  # subject scope: the parent belongs to the subject
    listed_from: str | None = None  # the page ``listed`` came from: a checkpoint holds it instead of the record
    only: tuple[str, ...] = ()  # relist: the ids of the page's items still to GET
    order: tuple[int, ...] = ()  # the step's place in depth-first pre-order (its parent's, then its index)


@dataclass
class ErrorRecord:
    code: str
    message: str
    kind: str | None
    target: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "kind": self.kind, "target": self.target}


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
        self.endpoints = endpoints
        self.aml = aml
        self.store = store
        self.concurrency = max(1, concurrency)
        self.frontier = frontier or 4 * self.concurrency
        self.requested = set(request.kinds)
        self.matcher = SubjectMatcher(request.subject, catalog) if request.scope == "subject" and request.subject else None
        self.needed = catalog.closure(request.kinds, subject_scope=self.matcher is not None)
        self._attributed: dict[tuple[str, str], set[str]] = {}
        self._written: dict[tuple[str, str], set[str]] = {}
        self._deferred: list[dict[str, Any]] = []
        self._secret_names = catalog.secret_field_names
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], set[str]] = {}
        self._writers: dict[tuple[str, str], JsonlWriter] = {}
        self._results: dict[str, TargetResult] = {}
        self.errors: list[ErrorRecord] = []
        self.calls = 0
        self._should_stop = should_stop or (lambda: False)
        self._resume_from = checkpoint
        self._on_checkpoint = on_checkpoint
        self._checkpoint_seconds = checkpoint_seconds
        self._clock = clock

    # -- the whole run --------------------------------------------------------------------------
    def run(self) -> ExportResult:
        pending: list[Step] = []
        resume = self._resume_checkpoint()
        if resume is not None:
            self._enqueue(pending, (), self._restore(resume))
        else:
            for target in self.request.targets:
                self._results[target.resource_id] = TargetResult(target)
            self._enqueue(pending, (), [self._workspace_step(t) for t in self.request.targets])
        running: dict[Future[list[Step]], Step] = {}
        in_flight: Counter[tuple[str, str]] = Counter()
        last_checkpoint = self._clock()
        with ThreadPoolExecutor(max_workers=self._total_slots, thread_name_prefix="dsr-export") as pool:
            while pending or running:
                stop = self._should_stop()
                due = self._on_checkpoint is not None and self._clock() - last_checkpoint >= self._checkpoint_seconds
                if stop or due:
                    # quiesce: let the steps under way finish, so the snapshot is consistent
                    for future in wait(running).done:
                        self._enqueue(pending, running[future].order, future.result())
                    running, in_flight = {}, Counter()
                    snapshot = self._snapshot(pending).model_dump(mode="json", exclude_defaults=True)
                    if self._on_checkpoint is not None:
                        self._on_checkpoint(snapshot)
                        size = len(json.dumps(snapshot, separators=(",", ":")))
                        log.info("checkpoint saved", extra={"bytes": size, "pending": len(pending)})
                    last_checkpoint = self._clock()
                    if stop:
                        return ExportResult(
                            list(self._results.values()), [], self.errors, self.calls, suspended=True, checkpoint=snapshot
                        )
                while (step := self._next_step(pending, in_flight)) is not None:
                    in_flight[self._lane(step)] += 1
                    running[pool.submit(contextvars.copy_context().run, self._run_step, step)] = step
                done, _ = wait(running, return_when=FIRST_COMPLETED, timeout=self._checkpoint_seconds)
                for future in done:
                    step = running.pop(future)
                    in_flight[self._lane(step)] -= 1
                    self._enqueue(pending, step.order, future.result())
        self._resolve_deferred()
        files = self._close_files()
        return ExportResult(list(self._results.values()), files, self.errors, self.calls)

    # -- scheduling -------------------------------------------------------------------------------
    def _lane(self, step: Step) -> tuple[str, str]:
        family = self.catalog.kinds[step.kind].family
        return family, step.target.subscriptionId if family == "arm" else step.target.location

    @property
    def _total_slots(self) -> int:
        return 2 * self.concurrency - 1

    @staticmethod
    def _enqueue(pending: list[Step], parent: tuple[int, ...], children: list[Step]) -> None:
        """Children take their parent's place in depth-first pre-order, in the order the parent gave them."""
        for i, child in enumerate(children):
            bisect.insort(pending, replace(child, order=(*parent, i)), key=_order)

    def _next_step(self, pending: list[Step], in_flight: Counter[tuple[str, str]]) -> Step | None:
        """The first waiting step, in depth-first pre-order, whose lane has a free slot; while at most
        ``frontier`` steps wait, a list's next page before any other."""
        if sum(in_flight.values()) >= self._total_slots:
            return None
        passes = (True, False) if len(pending) <= self.frontier else (False,)
        for pages_only in passes:
            for i, step in enumerate(pending):
                if pages_only and not (step.op == "list" and step.page > 1):
                    continue
                if in_flight[self._lane(step)] < self.concurrency:
                    del pending[i]
                    return step
        return None

    # -- checkpoints ------------------------------------------------------------------------------
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
        index = {t.resource_id: i for i, t in enumerate(self.request.targets)}
        return ExportCheckpoint(
            version=3,
            pending=self._pending_state(pending),
            files={f"{index[rid]}|{kind}": FileState(**writer.checkpoint()) for (rid, kind), writer in self._writers.items()},
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
            attributed={f"{index[rid]}|{kind}": sorted(ids) for (rid, kind), ids in self._attributed.items()},
            deferred=self._deferred,
        )

    def _pending_state(self, pending: list[Step]) -> list[PendingStep]:
        """The steps waiting, each as small as it can be said: the items one page still has to GET become one
        ``relist`` of that page (their listed records are read again on resume, not stored)."""
        index = {t.resource_id: i for i, t in enumerate(self.request.targets)}
        states: list[PendingStep] = []
        relists: dict[tuple[Any, ...], PendingStep] = {}
        for s in pending:
            derived = self._derived_url(s)
            first = self._derived_url(replace(s, op="list", page=1))
            if s.op == "item" and s.listed is not None and s.listed_from and s.item_id and s.url == derived:
                key = (s.target.resource_id, s.kind, s.listed_from, s.bindings, s.inherited)
                if key in relists:
                    relists[key].ids.append(s.item_id)
                    continue
                relists[key] = PendingStep(
                    target=index[s.target.resource_id],
                    kind=s.kind,
                    op="relist",
                    url=_short(s.listed_from, first, self._tokens(s)),
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
                        url=_short(s.url, first, self._tokens(s)),
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
                    url=None if s.url == derived else _short(s.url, first, self._tokens(s)) if s.op == "list" else s.url,
                    bindings=list(s.bindings),
                    item_id=s.item_id,
                    page=s.page,
                    list_url=None if s.list_url in (None, first) else s.list_url,
                    listed=s.listed,  # an item whose URL does not follow from its id keeps its listed record
                    inherited=s.inherited,
                )
            )
        return states

    def _derived_url(self, step: Step) -> str | None:
        """The URL of a step as its kind, target, bindings and id give it (None for a list's later page)."""
        kind = self.catalog.kinds[step.kind]
        values = dict(step.bindings)
        try:
            if step.op == "item" and kind.item:
                return url_for(
                    self.catalog,
                    self.endpoints,
                    kind,
                    kind.item,
                    step.target,
                    {**values, **({"id": step.item_id} if step.item_id else {})},
                )
            if step.op == "list" and step.page == 1 and kind.list:
                return url_for(self.catalog, self.endpoints, kind, kind.list, step.target, values, listing=True)
        except InvalidIdError:
            pass
        return None

    def _restore(self, checkpoint: ExportCheckpoint) -> list[Step]:
        by_id = {t.resource_id: t for t in self.request.targets}
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
        for key, state in checkpoint.files.items():
            rid, kind = self._file_key(key)
            name = jsonl_name(self.request.requestId, by_id[rid], kind)
            blob = self.store.block_blob(name)
            self._writers[(rid, kind)] = JsonlWriter(blob, name=name, kind=kind, workspace=rid, resume=state.model_dump())
            # what was written before the checkpoint: its blocks, committed and read back (never what a killed
            # run staged after it), so that a record reached again is not written twice
            ids: set[str] = set()
            if state.blocks:
                blob.commit(block_ids(state.blocks))
                for raw_line in (self.store.read(name) or b"").splitlines():
                    ids.add(str(json.loads(raw_line)["id"]))
            self._seen[(rid, kind)] = set(ids)
            self._written[(rid, kind)] = ids
        self.errors = [ErrorRecord(e.code, e.message, e.kind, e.target) for e in checkpoint.errors]
        self.calls = checkpoint.calls
        for key, attributed in checkpoint.attributed.items():
            rid, kind = self._file_key(key)
            self._attributed[(rid, kind)] = set(attributed)
        self._deferred = list(checkpoint.deferred)
        steps: list[Step] = []
        for p in checkpoint.pending:
            target = self.request.targets[p.target]
            step = Step(target, p.kind, p.op, "", tuple(p.bindings), p.item_id, p.listed, p.page, p.list_url, p.inherited)
            first = self._derived_url(replace(step, op="list", page=1))
            url = (
                _long(p.url, first, self._tokens(step))
                if p.op in ("list", "relist") and p.url
                else p.url or self._derived_url(step)
            )
            url = url or (first if p.op == "relist" else None)
            if url is None:  # a checkpoint that does not fit this catalog: nothing to run for this step
                log.warning("a checkpointed step without a URL skipped", extra={"kind": p.kind})
                continue
            step = replace(step, url=url, list_url=p.list_url or (first if p.op == "list" else None), only=tuple(p.ids))
            # the items it will GET count as seen, so that a record reached again is not fetched twice
            for rid in (p.item_id,) if p.op == "item" and p.item_id else step.only:
                self._first_sight(target, p.kind, rid, inherited=p.inherited)
            steps.append(step)
        return steps

    def _tokens(self, step: Step) -> tuple[str, ...]:
        return tuple(self.catalog.kinds[step.kind].tokenParams)

    def _file_key(self, key: str) -> tuple[str, str]:
        """``<target index>|<kind>`` -> (resource id, kind)."""
        index, kind = key.split("|", 1)
        return self.request.targets[int(index)].resource_id, kind

    def _close_files(self) -> list[FileEntry]:
        """Commit the files of the workspaces that succeeded, side by side (each commit is a round trip)."""
        writers = [writer for (rid, _kind), writer in self._writers.items() if self._results[rid].ok]
        if len(writers) <= 1:
            return [writer.close() for writer in writers]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(writers)), thread_name_prefix="dsr-commit") as pool:
            closing = [pool.submit(contextvars.copy_context().run, writer.close) for writer in writers]
            return [future.result() for future in closing]

    # -- steps -----------------------------------------------------------------------------------
    def _workspace_step(self, target: Target) -> Step:
        kind = self.catalog.kinds["workspace"]
        assert kind.item
        return Step(target, "workspace", "item", url_for(self.catalog, self.endpoints, kind, kind.item, target, {}))

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
            return self._start_target(step.target, response.body)
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

    def _start_target(self, target: Target, body: Any) -> list[Step]:
        problem = workspace_problem(target, body)
        if problem:
            self._fail_target(target, *problem)
            return []
        for kind_name in self.request.kinds:
            blob_name = jsonl_name(self.request.requestId, target, kind_name)
            self._writers[(target.resource_id, kind_name)] = JsonlWriter(
                self.store.block_blob(blob_name), name=blob_name, kind=kind_name, workspace=target.resource_id
            )
        steps = self._accept(target, "workspace", body, None, {}, self._workspace_step(target).url)
        for name, kind in self.catalog.kinds.items():
            if name in self.needed and kind.source is None and kind.list:
                url = url_for(self.catalog, self.endpoints, kind, kind.list, target, {}, listing=True)
                steps.append(Step(target, name, "list", url, list_url=url))
        return steps

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
            if not self._first_sight(step.target, step.kind, rid):
                continue
            if kind.fetchItem and step.kind in self.requested and kind.item and kind.key_field:
                key = record.get(kind.key_field) if isinstance(record, dict) else None
                if isinstance(key, (str, int)) and str(key):
                    url = self._item_url(step, kind, {**bindings, "id": str(key)})
                    if url is None:
                        continue
                    # the listed record rides in the step (and in a checkpoint in state): scrubbed before it is kept;
                    # its secrets are counted when the merged record is written
                    listed, _ = scrub_record(record, self._secret_names)
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
                step.target, step.kind, record, rid, bindings, self._source_url(kind, step, record), inherited=step.inherited
            )
        next_url = self._next_page(kind, step, body)
        if next_url:
            # after the children of this page in depth-first order (``_next_step`` starts it early while few wait)
            steps.append(
                Step(
                    step.target,
                    step.kind,
                    "list",
                    next_url,
                    step.bindings,
                    page=step.page + 1,
                    list_url=step.list_url,
                    inherited=step.inherited,
                ),
            )
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
                listed[rid] = scrub_record(record, self._secret_names)[0]
        steps: list[Step] = []
        for rid in step.only:
            item = Step(step.target, step.kind, "item", "", step.bindings, rid, listed.get(rid), inherited=step.inherited)
            url = self._derived_url(item)
            if url is not None:
                steps += self._run_step(replace(item, url=url))
        return steps

    def _next_page(self, kind: Kind, step: Step, body: dict[str, Any]) -> str | None:
        try:
            return next_page_url(kind, step.url, step.list_url or step.url, body, step.page)
        except (BadResponseError, UntrustedUrlError) as exc:  # paging_loop, untrusted_url: this list stops here
            self._error(step, exc.code, exc.message)
            return None

    def _item_url(self, step: Step, kind: Kind, values: dict[str, str]) -> str | None:
        """An item's URL; ``None`` (and an ``invalid_id`` error) for an id that is, or decodes to, a dot segment."""
        assert kind.item
        try:
            return url_for(self.catalog, self.endpoints, kind, kind.item, step.target, values)
        except InvalidIdError as exc:
            self._error(step, exc.code, exc.message)
            return None

    def _source_url(self, kind: Kind, step: Step, record: Any) -> str:
        key = record.get(kind.key_field) if isinstance(record, dict) and kind.key_field else None
        if kind.item and isinstance(key, (str, int)) and str(key):
            try:
                return url_for(
                    self.catalog,
                    self.endpoints,
                    kind,
                    kind.item,
                    step.target,
                    {**dict(step.bindings), "id": str(key)},
                    query=False,
                )
            except InvalidIdError:
                pass  # not called; the record is still exported, its source is the list it came from
        return strip_query(step.url)

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
        kind = self.catalog.kinds[kind_name]
        rid = rid or record_id(kind, record)
        match: str | None = None
        if self.matcher is not None:
            match = self.matcher.match(kind_name, record, inherited=inherited)
            if match in ("identity", "parent"):
                with self._lock:
                    self._attributed.setdefault((target.resource_id, kind_name), set()).add(rid)
            if kind.inherit and match in (None, "mention") and kind_name in self.requested:
                # whether its parent (say, the run of a metric) is the subject's is known only at the end
                kept, scrubbed = scrub_record(record, self._secret_names)  # kept in state: scrubbed first
                with self._lock:
                    self._deferred.append(
                        {
                            "target": target.resource_id,
                            "kind": kind_name,
                            "id": rid,
                            "source": strip_query(source),
                            "record": kept,
                            "secrets": scrubbed.secrets,
                            "nonFinite": scrubbed.non_finite,
                            "match": match,
                        }
                    )
                return self._children(target, kind_name, record, bindings, inherited=False)
        if kind_name in self.requested:
            self._count_match(target, kind_name, match)
            if self.matcher is None or match:
                self._write(target, kind_name, rid, source, record, match)
        return self._children(target, kind_name, record, bindings, inherited=match in ("identity", "parent"))

    def _count_match(self, target: Target, kind_name: str, match: str | None) -> None:
        if self.matcher is None:
            return
        result = self._results[target.resource_id]
        with self._lock:
            tally = result.matches.setdefault(kind_name, {"scanned": 0, "identity": 0, "parent": 0, "mention": 0})
            tally["scanned"] += 1
            if match:
                tally[match] += 1

    def _write(self, target: Target, kind_name: str, rid: str, source: str, record: Any, match: str | None) -> None:
        with self._lock:
            written = self._written.setdefault((target.resource_id, kind_name), set())
            if self.matcher is not None:
                if rid in written:
                    return
                written.add(rid)
        result = self._results[target.resource_id]
        data, scrubbed = scrub_record(record, self._secret_names)
        line: dict[str, Any] = {"kind": kind_name, "id": rid, "source": strip_query(source), "data": data}
        if match:
            line["matchedBy"] = match
        self._writers[(target.resource_id, kind_name)].write(line)
        with self._lock:
            result.counts[kind_name] = result.counts.get(kind_name, 0) + 1
            result.secrets_scrubbed += scrubbed.secrets
            result.non_finite += scrubbed.non_finite

    def _resolve_deferred(self) -> None:
        by_id = {t.resource_id: t for t in self.request.targets}
        for entry in self._deferred:
            kind = self.catalog.kinds[entry["kind"]]
            assert kind.inherit
            parents = self._attributed.get((entry["target"], kind.inherit.kind), set())
            record = entry["record"]
            parent = record.get(kind.inherit.field) if isinstance(record, dict) else None
            match = "parent" if isinstance(parent, (str, int)) and str(parent) in parents else entry["match"]
            target = by_id[entry["target"]]
            self._count_match(target, entry["kind"], match)
            if match and self._results[entry["target"]].ok:
                self._write(target, entry["kind"], entry["id"], entry["source"], record, match)
                result = self._results[entry["target"]]
                result.secrets_scrubbed += int(entry.get("secrets", 0))
                result.non_finite += int(entry.get("nonFinite", 0))
        self._deferred = []

    def _children(self, target: Target, kind_name: str, record: Any, bindings: dict[str, str], *, inherited: bool) -> list[Step]:
        steps: list[Step] = []
        for child_name in self.catalog.children(kind_name):
            if child_name not in self.needed:
                continue
            child = self.catalog.kinds[child_name]
            src = child.source
            assert src is not None
            if not matches_where(record, src.where):
                continue
            if src.bind and child.list:
                values = {ph: record.get(field) if isinstance(record, dict) else None for ph, field in src.bind.items()}
                if any(not isinstance(v, (str, int)) or not str(v) for v in values.values()):
                    continue
                child_bindings = {**bindings, **{k: str(v) for k, v in values.items()}}
                try:
                    url = url_for(self.catalog, self.endpoints, child, child.list, target, child_bindings, listing=True)
                except InvalidIdError as exc:
                    self._record_error(child_name, target, exc.code, exc.message)
                    continue
                passed = inherited and src.inheritAttribution  # v2: a record is the subject's only when it names them
                steps.append(
                    Step(target, child_name, "list", url, tuple(sorted(child_bindings.items())), list_url=url, inherited=passed)
                )
            elif src.ids and child.item:
                for child_id in scalar_ids(record, src.ids):
                    if self._first_sight(target, child_name, child_id, inherited=inherited):
                        try:
                            url = url_for(self.catalog, self.endpoints, child, child.item, target, {**bindings, "id": child_id})
                        except InvalidIdError as exc:
                            self._record_error(child_name, target, exc.code, exc.message)
                            continue
                        steps.append(
                            Step(target, child_name, "item", url, tuple(sorted(bindings.items())), child_id, inherited=inherited)
                        )
        return steps

    # -- bookkeeping -----------------------------------------------------------------------------
    def _first_sight(self, target: Target, kind: str, rid: str, *, inherited: bool = False) -> bool:
        """True the first time an id turns up. In subject scope, an item first reached from someone else's
        record (not inherited) is reached again when one of the subject's records refers to it too (a module
        shared by two people's pipelines), under the key ``+id``."""
        with self._lock:
            seen = self._seen.setdefault((target.resource_id, kind), set())
            if self.matcher is not None and inherited:
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

    def _fail_target(self, target: Target, code: str, message: str) -> None:
        with self._lock:
            self._results[target.resource_id].ok = False
            self.errors.append(ErrorRecord(code, message, "workspace", target.resource_id))

    def _error(self, step: Step, code: str, message: str) -> None:
        self._record_error(step.kind, step.target, code, message)

    def _record_error(self, kind: str, target: Target, code: str, message: str) -> None:
        log.warning("step failed", extra={"kind": kind, "code": code})
        with self._lock:
            self.errors.append(ErrorRecord(code, message, kind, target.resource_id))


def _order(step: Step) -> tuple[int, ...]:
    return step.order


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


__all__ = ["Endpoints", "ErrorRecord", "ExportResult", "ExportTraversal", "TargetResult"]
