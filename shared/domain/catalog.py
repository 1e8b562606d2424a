"""The endpoint catalog: ``catalog.json`` validated by a strict schema at load.

Pure data plus the few pure functions that read it: path building, id extraction, references.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.domain.contract import DELETE_KINDS, EXPORT_KINDS, Target
from shared.domain.errors import InvalidIdError
from shared.domain.urls import is_dot_segment

_Strict = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
Family = Literal["arm", "modelmanagement", "experiments", "aether"]
_PLACEHOLDER = re.compile(r"{([A-Za-z]+)}")


class Source(BaseModel):
    """Where a kind's records come from when they hang off another kind (Fides' ``references``)."""

    model_config = _Strict
    kind: str
    bind: dict[str, str] = Field(default_factory=dict, description="placeholder -> field of the parent record")
    ids: str | None = Field(default=None, description="field path in the parent holding ids of this kind ([*] = each)")
    where: dict[str, str] = Field(default_factory=dict, description="only parents whose field equals this value")
    inheritAttribution: bool = Field(
        default=True, description="subject scope: children of the subject's record are the subject's too (v1); v2: no"
    )

    @model_validator(mode="after")
    def _one_way(self) -> Source:
        if bool(self.bind) == bool(self.ids):
            raise ValueError("a source either binds list placeholders (bind) or names ids (ids), not both")
        return self


class Inherit(BaseModel):
    """A record belongs to the subject when the record of ``kind`` it names in ``field`` does."""

    model_config = _Strict
    kind: str
    field: str


class Kind(BaseModel):
    model_config = _Strict
    comment: str | None = Field(default=None, alias="$comment")
    family: Family
    list: str | None = None
    item: str | None = None
    itemKey: str | None = Field(default=None, description="field whose value fills {id} in item (default idField)")
    query: dict[str, str] = Field(default_factory=dict)
    listQuery: dict[str, str] = Field(default_factory=dict, description="query of list pages only (listViewType=All)")
    where: dict[str, str] = Field(default_factory=dict, description="only the listed records whose field equals this")
    paging: Literal["nextLink", "continuationToken", "none"] = "none"
    tokenParams: tuple[str, ...] = ("$continuationtoken", "continuationToken")
    idField: str | None = None
    idFallbacks: tuple[str, ...] = Field(default=("id", "name"), description="tried when idField is missing")
    fetchItem: bool = False
    source: Source | None = Field(default=None, alias="from")
    operations: tuple[Literal["export", "delete"], ...]
    identityFields: tuple[str, ...] = ()
    ownerFields: tuple[str, ...] | None = Field(
        default=None, description="subject-scoped delete: who owns a record (default identityFields)"
    )
    inherit: Inherit | None = None
    deleteQuery: dict[str, str] = Field(default_factory=dict, description="added to a DELETE only")
    deleteLevel: int = Field(default=0, ge=0, le=9, description="deletes run level by level, lowest first")
    deletesEmptiedContainer: bool = Field(
        default=False, description="a versions kind: its container (the source) goes once all its versions went"
    )

    @model_validator(mode="after")
    def _coherent(self) -> Kind:
        if not self.list and not self.item:
            raise ValueError("a kind needs a list or an item path")
        if self.list and not self.idField:
            raise ValueError("a listed kind needs idField")
        if self.list and self.paging == "none":
            raise ValueError("a listed kind needs a paging style")
        if self.fetchItem and not self.item:
            raise ValueError("fetchItem needs an item path")
        if not self.list and self.source is not None and not self.source.ids:
            raise ValueError("a kind without a list is found by ids from its source")
        if "delete" in self.operations and not (self.list and self.item):
            raise ValueError("a deletable kind needs a list and an item path")
        if self.deletesEmptiedContainer and not (self.source and self.source.bind and "delete" in self.operations):
            raise ValueError("deletesEmptiedContainer needs a deletable kind listed per container (from.bind)")
        return self

    @property
    def owner_fields(self) -> tuple[str, ...]:
        return self.identityFields if self.ownerFields is None else self.ownerFields

    @property
    def key_field(self) -> str | None:
        return self.itemKey or self.idField


class WorkspaceDelete(BaseModel):
    model_config = _Strict
    family: Family
    item: str
    query: dict[str, str]


class Catalog(BaseModel):
    model_config = _Strict
    comment: str | None = Field(default=None, alias="$comment")
    workspacePath: str
    families: dict[Family, str]
    parameters: dict[str, str] = Field(default_factory=dict, description="setting -> default, written ${SETTING}")
    secretFields: tuple[str, ...]
    kinds: dict[str, Kind]
    workspaceDelete: WorkspaceDelete

    @model_validator(mode="after")
    def _references_resolve(self) -> Catalog:
        for name, kind in self.kinds.items():
            if kind.source and kind.source.kind not in self.kinds:
                raise ValueError(f"kind {name}: source kind {kind.source.kind!r} is not in the catalog")
            if kind.deletesEmptiedContainer and kind.source:
                container = self.kinds[kind.source.kind]
                if not (container.list and container.item) or container.deleteLevel <= kind.deleteLevel:
                    raise ValueError(f"kind {name}: its container needs a list, an item and a later deleteLevel")
            if kind.inherit and kind.inherit.kind not in self.kinds:
                raise ValueError(f"kind {name}: inherit kind {kind.inherit.kind!r} is not in the catalog")
            for template in (kind.list, kind.item):
                for ph in _PLACEHOLDER.findall(template or ""):
                    bound = kind.source.bind if kind.source else {}
                    if ph not in ("ws", "id", "subscriptionId", "resourceGroup", "workspace") and ph not in bound:
                        raise ValueError(f"kind {name}: placeholder {{{ph}}} is bound by nothing")
        missing = [k for k in EXPORT_KINDS if k not in self.kinds or "export" not in self.kinds[k].operations]
        missing += [k for k in DELETE_KINDS if k not in self.kinds or "delete" not in self.kinds[k].operations]
        if missing:
            raise ValueError(f"the contract's kinds {missing} are not covered by the catalog")
        return self

    def ancestors(self, kind: str) -> list[str]:
        chain: list[str] = []
        current = self.kinds[kind].source
        while current is not None:
            chain.append(current.kind)
            current = self.kinds[current.kind].source
        return chain

    def closure(self, kinds: tuple[str, ...], *, subject_scope: bool = False) -> set[str]:
        """The requested kinds and every kind they are reached through (and, for a subject-scoped
        request, the kinds whose attribution they inherit)."""
        needed = set(kinds)
        for kind in kinds:
            needed.update(self.ancestors(kind))
            inherit = self.kinds[kind].inherit
            if subject_scope and inherit:
                needed.add(inherit.kind)
                needed.update(self.ancestors(inherit.kind))
        return needed

    def children(self, kind: str) -> list[str]:
        return [name for name, k in self.kinds.items() if k.source and k.source.kind == kind]

    @property
    def secret_field_names(self) -> frozenset[str]:
        return frozenset(name.lower() for name in self.secretFields)


_PARAMETER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


@cache
def load_catalog(path: str | None = None, parameters: tuple[tuple[str, str], ...] = ()) -> Catalog:
    """The catalog with every ``${SETTING}`` filled: from ``parameters`` (the settings), else the catalog's
    default for it. A ``${NAME}`` the catalog does not declare is an error."""
    file = Path(path) if path else Path(__file__).with_name("catalog.json")
    raw = json.loads(file.read_text(encoding="utf-8"))
    values = {**dict(raw.get("parameters") or {}), **dict(parameters)}

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return _PARAMETER.sub(lambda m: _parameter(values, m.group(1)), value)
        if isinstance(value, dict):
            return {k: v if k in ("parameters", "$comment") else fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    return Catalog.model_validate(fill(raw))


def _parameter(values: dict[str, str], name: str) -> str:
    if name not in values:
        raise ValueError(f"the catalog uses ${{{name}}} but declares no default for it under parameters")
    return values[name]


def encode_segment(value: str) -> str:
    """One path segment, percent-encoded so that it stays one segment (``a/b`` -> ``a%2Fb``). An id that is
    or decodes to ``.`` or ``..`` raises ``InvalidIdError`` (``invalid_id``): it is never sent."""
    if is_dot_segment(value):
        raise InvalidIdError("an id that is (or decodes to) '.' or '..' cannot name one item; it was not sent")
    return quote(value, safe=":@-._~()")


def workspace_path(catalog: Catalog, target: Target) -> str:
    values = {"subscriptionId": target.subscriptionId, "resourceGroup": target.resourceGroup, "workspace": target.workspace}
    return _PLACEHOLDER.sub(lambda m: encode_segment(values[m.group(1)]), catalog.workspacePath)


def build_path(template: str, ws_path: str, values: dict[str, str]) -> str:
    """Fill a catalog template: {ws} verbatim (already encoded), anything else as one encoded segment."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "ws":
            return ws_path
        if name not in values:
            raise KeyError(f"no value for placeholder {{{name}}}")
        return encode_segment(values[name])

    return _PLACEHOLDER.sub(fill, template)


def field_values(record: Any, path: str) -> list[Any]:
    """Values at a dotted path; ``name[*]`` walks every element of a list."""
    current: list[Any] = [record]
    for part in path.split("."):
        each = part.endswith("[*]")
        name = part[:-3] if each else part
        nxt: list[Any] = []
        for item in current:
            if isinstance(item, dict) and name in item:
                value = item[name]
                if each:
                    if isinstance(value, list):
                        nxt.extend(value)
                else:
                    nxt.append(value)
        current = nxt
    return current


def scalar_ids(record: Any, path: str) -> list[str]:
    """The non-empty string or integer ids at ``path``, in order, without repeats."""
    out: list[str] = []
    for value in field_values(record, path):
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (str, int)) and str(value):
            text = str(value)
            if text not in out:
                out.append(text)
    return out


def matches_where(record: Any, where: dict[str, str]) -> bool:
    return all(any(str(v) == expected for v in field_values(record, path)) for path, expected in where.items())
