"""Planning a delete: what is to go, read before anything is deleted.

For each workspace: its GET (it must exist, in the request's location), then every record of each kind asked
for, listed with the bindings it was listed under (versions per container, deployments per endpoint; the
list URLs of a child kind follow from its parents by the traversal rules' ``bind_values``). In subject scope
only what the subject owns is planned; what merely names them is listed for review
(``subject_scope.delete_verdict``). A container is planned only when all its versions are, after them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

import shared.telemetry as telemetry
from shared.domain.catalog import Catalog, Kind, matches_where
from shared.domain.contract import DsrRequest, Target
from shared.domain.errors import AzureMLError, InvalidIdError, NotFoundError
from shared.domain.outcome import error_entry
from shared.domain.subject import SubjectMatcher
from shared.ports import AzureML
from shared.service.listing import Endpoints, list_records, record_id, url_for, workspace_problem
from shared.service.subject_scope import delete_verdict
from shared.service.traversal import bind_values

ItemResult = Literal["planned", "deleted", "absent", "failed"]


class PlannedItem(BaseModel):
    """One item to delete, and how its deletion went (mutable: the run fills in its result). A delete's
    checkpoint holds these as they are (``checkpoint.DeleteCheckpoint``)."""

    model_config = ConfigDict(extra="forbid")

    requires: list[str] = Field(default_factory=list)  # a container: the ids of its versions, all to be gone first
    target: Target
    kind: str
    id: str
    url: str
    result: ItemResult = "planned"
    verified: bool = False
    status: int | None = None
    error: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "id": self.id, "target": self.target.resource_id, "result": self.result}
        if self.result != "planned":
            out["verified"] = self.verified
        return out


@dataclass
class DeletePlan:
    items: list[PlannedItem] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    failed_targets: set[str] = field(default_factory=set)
    review: list[dict[str, Any]] = field(default_factory=list)  # subject scope: mentioned, never deleted
    scanned: int = 0


@dataclass
class _Listing:
    """What a delete plan listed of one kind: (record, bindings) and the bindings whose list failed."""

    records: list[tuple[Any, tuple[tuple[str, str], ...]]] = field(default_factory=list)
    failed: set[tuple[tuple[str, str], ...]] = field(default_factory=set)


class DeletePlanner:
    def __init__(self, request: DsrRequest, *, catalog: Catalog, endpoints: Endpoints, aml: AzureML) -> None:
        self.request = request
        self.catalog = catalog
        self.endpoints = endpoints
        self.aml = aml

    def plan(self) -> DeletePlan:
        plan = DeletePlan()
        matcher = (
            SubjectMatcher(self.request.subject, self.catalog)
            if self.request.scope == "subject" and self.request.subject
            else None
        )
        for target in telemetry.each_workspace(self.request.targets):
            ws_kind = self.catalog.kinds["workspace"]
            assert ws_kind.item
            try:
                body = self.aml.get(url_for(self.catalog, self.endpoints, ws_kind, ws_kind.item, target, {})).body
                problem = workspace_problem(target, body)
            except NotFoundError:
                problem = ("workspace_not_found", "the workspace does not exist (or the identity cannot see it)")
            except AzureMLError as exc:
                problem = (exc.code, f"the workspace could not be read: {exc.message}")  # our words, see errors.py
            if problem:
                plan.failed_targets.add(target.resource_id)
                plan.errors.append(error_entry(problem[0], problem[1], kind="workspace", target=target.resource_id))
                continue
            listed: dict[str, _Listing] = {}
            for kind_name in self.request.kinds:
                kind = self.catalog.kinds[kind_name]
                assert kind.list and kind.item
                listing = self._listing(target, kind_name, listed, plan)
                planned: dict[tuple[tuple[str, str], ...], list[str]] = {}
                for record, bindings in listing.records:
                    rid = record_id(kind, record)
                    plan.scanned += 1
                    verdict = delete_verdict(matcher, kind_name, record) if matcher is not None else "owner"
                    if verdict != "owner":
                        if verdict is not None:
                            plan.review.append({"kind": kind_name, "id": rid, "target": target.resource_id, "matchedBy": verdict})
                        continue
                    try:
                        url = self._item_url(kind, target, bindings, record, rid)
                    except InvalidIdError as exc:  # '.' or '..': never sent, reported
                        plan.errors.append(error_entry(exc.code, exc.message, kind=kind_name, target=target.resource_id))
                        continue
                    plan.items.append(PlannedItem(target=target, kind=kind_name, id=rid, url=url))
                    planned.setdefault(bindings, []).append(rid)
                if kind.deletesEmptiedContainer:
                    self._plan_containers(target, kind_name, listing, planned, listed, plan, subject_scope=matcher is not None)
        return plan

    def _item_url(self, kind: Kind, target: Target, bindings: tuple[tuple[str, str], ...], record: Any, rid: str) -> str:
        assert kind.item
        key = record.get(kind.key_field) if isinstance(record, dict) and kind.key_field else None
        value = str(key) if isinstance(key, (str, int)) and not isinstance(key, bool) and str(key) else rid
        return url_for(self.catalog, self.endpoints, kind, kind.item, target, {**dict(bindings), "id": value})

    def _listing(self, target: Target, kind_name: str, listed: dict[str, _Listing], plan: DeletePlan) -> _Listing:
        """Every record of a kind with the bindings it was listed under (versions per container, deployments
        per endpoint), each id once; parents listed once per target and shared."""
        if kind_name in listed:
            return listed[kind_name]
        kind = self.catalog.kinds[kind_name]
        assert kind.list
        out = _Listing()
        listed[kind_name] = out
        lists: list[tuple[tuple[tuple[str, str], ...], str]] = []
        if kind.source is not None and kind.source.bind:
            for parent, parent_bindings in self._listing(target, kind.source.kind, listed, plan).records:
                if not matches_where(parent, kind.source.where):
                    continue
                values = bind_values(kind.source.bind, parent, dict(parent_bindings))
                if values is None:
                    continue
                bindings = tuple(sorted(values.items()))
                try:
                    url = url_for(self.catalog, self.endpoints, kind, kind.list, target, dict(bindings), listing=True)
                except InvalidIdError as exc:  # a parent named '.' or '..': never sent, reported
                    plan.errors.append(error_entry(exc.code, exc.message, kind=kind_name, target=target.resource_id))
                    continue
                lists.append((bindings, url))
        else:
            lists.append(((), url_for(self.catalog, self.endpoints, kind, kind.list, target, {}, listing=True)))
        seen: set[str] = set()
        for bindings, first in lists:
            try:
                for record in list_records(self.aml, kind, first):
                    if kind.where and not matches_where(record, kind.where):
                        continue
                    rid = record_id(kind, record)
                    if rid in seen or rid.startswith("sha256:"):
                        continue
                    seen.add(rid)
                    out.records.append((record, bindings))
            except NotFoundError:
                if not bindings:
                    out.failed.add(bindings)
                    plan.errors.append(
                        error_entry("list_not_found", "the list endpoint answered 404", kind=kind_name, target=target.resource_id)
                    )
                # a parent gone since it was listed has nothing left under it
            except AzureMLError as exc:
                out.failed.add(bindings)
                message = f"listing failed: {exc.message}"
                plan.errors.append(error_entry(exc.code, message, kind=kind_name, target=target.resource_id))
        return out

    def _plan_containers(
        self,
        target: Target,
        kind_name: str,
        versions: _Listing,
        planned: dict[tuple[tuple[str, str], ...], list[str]],
        listed: dict[str, _Listing],
        plan: DeletePlan,
        *,
        subject_scope: bool,
    ) -> None:
        """A container goes only when every one of its versions is planned (at subject scope: it has some, and
        all are the subject's); it is deleted after them, and only if they all went."""
        kind = self.catalog.kinds[kind_name]
        assert kind.source is not None
        container_kind = self.catalog.kinds[kind.source.kind]
        all_versions: dict[tuple[tuple[str, str], ...], int] = {}
        for _record, bindings in versions.records:
            all_versions[bindings] = all_versions.get(bindings, 0) + 1
        for container, parent_bindings in listed[kind.source.kind].records:
            values = {ph: container.get(f) if isinstance(container, dict) else None for ph, f in kind.source.bind.items()}
            bindings = tuple(sorted({**dict(parent_bindings), **{k: str(v) for k, v in values.items()}}.items()))
            mine = planned.get(bindings, [])
            if bindings in versions.failed or len(mine) != all_versions.get(bindings, 0) or (subject_scope and not mine):
                continue
            cid = record_id(container_kind, container)
            try:
                url = self._item_url(container_kind, target, parent_bindings, container, cid)
            except InvalidIdError:
                continue  # its versions could not have been listed either (reported there)
            plan.items.append(PlannedItem(target=target, kind=kind.source.kind, id=cid, url=url, requires=list(mine)))


__all__ = ["DeletePlan", "DeletePlanner", "ItemResult", "PlannedItem"]
