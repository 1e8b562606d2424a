"""The traversal rules of an export: from the catalog, a step and what it read, the steps that follow.

Pure: no call, no state. A step is one GET (a list page, an item); these functions say which step starts a
workspace, which lists hang off nothing, the URL of an item, a list's next page, the lists and items that
hang off a record (the catalog's ``from``), and the lane (service limit) a step waits in. An id that cannot
be put in a URL raises ``InvalidIdError``; a bad next page ``BadResponseError`` or ``UntrustedUrlError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from shared.domain.catalog import Catalog, Kind, matches_where, scalar_ids
from shared.domain.contract import Target
from shared.domain.errors import InvalidIdError
from shared.domain.urls import strip_query
from shared.service.listing import Endpoints, next_page_url, url_for

StepOp = Literal["list", "item", "relist"]


@dataclass(frozen=True)
class Step:
    target: Target
    kind: str
    op: StepOp  # relist: a page read again for the listed records of the items ``only``
    url: str
    bindings: tuple[tuple[str, str], ...] = ()
    item_id: str | None = None
    listed: Any = None  # the list record an item GET completes
    page: int = 1
    list_url: str | None = None  # first page of the list, for continuation tokens
    inherited: bool = False  # subject scope: the parent belongs to the subject
    listed_from: str | None = None  # the page ``listed`` came from: a checkpoint holds it instead of the record
    only: tuple[str, ...] = ()  # relist: the ids of the page's items still to GET


@dataclass(frozen=True)
class Problem:
    """A step that could not be made (an ``invalid_id``): recorded as an error of ``kind``, the rest goes on."""

    kind: str
    code: str
    message: str


def bind_values(bind: dict[str, str], record: Any, bindings: dict[str, str]) -> dict[str, str] | None:
    """The bindings of a list that hangs off ``record`` (``from.bind``: placeholder -> the record's field), added
    to the record's own; None when the record lacks one of the values (that list cannot be asked for)."""
    values = {ph: record.get(field) if isinstance(record, dict) else None for ph, field in bind.items()}
    if any(not isinstance(v, (str, int)) or not str(v) for v in values.values()):
        return None
    return {**bindings, **{k: str(v) for k, v in values.items()}}


class TraversalRules:
    """The rules for one request: its catalog, endpoints, the kinds it asked for and the kinds it needs."""

    def __init__(self, catalog: Catalog, endpoints: Endpoints, *, requested: set[str], needed: set[str]) -> None:
        self.catalog = catalog
        self.endpoints = endpoints
        self.requested = requested
        self.needed = needed

    def lane(self, step: Step) -> tuple[str, str]:
        """The service limit a step waits for: ARM per subscription, each data-plane family per region."""
        family = self.catalog.kinds[step.kind].family
        return family, step.target.subscriptionId if family == "arm" else step.target.location

    @staticmethod
    def is_next_page(step: Step) -> bool:
        """A list's later page: a list's pages are the critical path, so they start first while few steps wait."""
        return step.op == "list" and step.page > 1

    def tokens(self, kind: str) -> tuple[str, ...]:
        return tuple(self.catalog.kinds[kind].tokenParams)

    def workspace_step(self, target: Target) -> Step:
        kind = self.catalog.kinds["workspace"]
        assert kind.item
        return Step(target, "workspace", "item", url_for(self.catalog, self.endpoints, kind, kind.item, target, {}))

    def root_lists(self, target: Target) -> list[Step]:
        """The lists that hang off the workspace itself (no ``from``)."""
        steps: list[Step] = []
        for name, kind in self.catalog.kinds.items():
            if name in self.needed and kind.source is None and kind.list:
                url = url_for(self.catalog, self.endpoints, kind, kind.list, target, {}, listing=True)
                steps.append(Step(target, name, "list", url, list_url=url))
        return steps

    def derived_url(self, step: Step) -> str | None:
        """The URL of a step as its kind, target, bindings and id give it (None for a list's later page)."""
        kind = self.catalog.kinds[step.kind]
        values = dict(step.bindings)
        try:
            if step.op == "item" and kind.item:
                return self.item_url(step, {**values, **({"id": step.item_id} if step.item_id else {})})
            if step.op == "list" and step.page == 1 and kind.list:
                return url_for(self.catalog, self.endpoints, kind, kind.list, step.target, values, listing=True)
        except InvalidIdError:
            pass
        return None

    def fetch_key(self, step: Step, record: Any) -> str | None:
        """The id to GET a listed record by, when its kind is fetched in full (runs); None: the record is whole."""
        kind = self.catalog.kinds[step.kind]
        if kind.fetchItem and step.kind in self.requested and kind.item and kind.key_field:
            key = record.get(kind.key_field) if isinstance(record, dict) else None
            if isinstance(key, (str, int)) and str(key):
                return str(key)
        return None

    def item_url(self, step: Step, values: dict[str, str], *, query: bool = True) -> str:
        """An item's URL (``query``: with the kind's fixed query); ``InvalidIdError`` for an id that is, or
        decodes to, a dot segment."""
        kind = self.catalog.kinds[step.kind]
        assert kind.item
        return url_for(self.catalog, self.endpoints, kind, kind.item, step.target, values, query=query)

    def source_url(self, step: Step, record: Any) -> str:
        """Where a listed record is said to come from: its item URL, else the list it came from."""
        kind = self.catalog.kinds[step.kind]
        key = record.get(kind.key_field) if isinstance(record, dict) and kind.key_field else None
        if kind.item and isinstance(key, (str, int)) and str(key):
            try:
                return self.item_url(step, {**dict(step.bindings), "id": str(key)}, query=False)
            except InvalidIdError:
                pass  # not called; the record is still exported, its source is the list it came from
        return strip_query(step.url)

    def next_page(self, step: Step, body: dict[str, Any]) -> Step | None:
        """The list's next page, or None at its end; ``paging_loop`` / ``untrusted_url`` raise."""
        kind: Kind = self.catalog.kinds[step.kind]
        url = next_page_url(kind, step.url, step.list_url or step.url, body, step.page)
        if not url:
            return None
        return Step(
            step.target,
            step.kind,
            "list",
            url,
            step.bindings,
            page=step.page + 1,
            list_url=step.list_url,
            inherited=step.inherited,
        )

    def children(
        self,
        target: Target,
        kind_name: str,
        record: Any,
        bindings: dict[str, str],
        *,
        inherited: bool,
        first_sight: Callable[[Target, str, str, bool], bool],
    ) -> tuple[list[Step], list[Problem]]:
        """The lists and items that hang off a record (an item is asked for only if ``first_sight`` of its id)."""
        steps: list[Step] = []
        problems: list[Problem] = []
        for child_name in self.catalog.children(kind_name):
            if child_name not in self.needed:
                continue
            child = self.catalog.kinds[child_name]
            src = child.source
            assert src is not None
            if not matches_where(record, src.where):
                continue
            if src.bind and child.list:
                child_bindings = bind_values(src.bind, record, bindings)
                if child_bindings is None:
                    continue
                try:
                    url = url_for(self.catalog, self.endpoints, child, child.list, target, child_bindings, listing=True)
                except InvalidIdError as exc:
                    problems.append(Problem(child_name, exc.code, exc.message))
                    continue
                passed = inherited and src.inheritAttribution  # v2: a record is the subject's only when it names them
                steps.append(
                    Step(target, child_name, "list", url, tuple(sorted(child_bindings.items())), list_url=url, inherited=passed)
                )
            elif src.ids and child.item:
                for child_id in scalar_ids(record, src.ids):
                    if first_sight(target, child_name, child_id, inherited):
                        try:
                            url = url_for(self.catalog, self.endpoints, child, child.item, target, {**bindings, "id": child_id})
                        except InvalidIdError as exc:
                            problems.append(Problem(child_name, exc.code, exc.message))
                            continue
                        steps.append(
                            Step(target, child_name, "item", url, tuple(sorted(bindings.items())), child_id, inherited=inherited)
                        )
        return steps, problems


__all__ = ["Problem", "Step", "StepOp", "TraversalRules", "bind_values"]
