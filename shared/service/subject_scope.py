"""Subject scope: which records are the subject's, and by what (``matchedBy``).

An export (``SubjectScope``) writes the records that are the subject's: those that name them (``identity``),
whose parent is theirs (``parent``), or that mention them (``mention``). Some kinds (a metric of a run) say
who their parent is only by a field, and the parent may be listed later: such a record is kept aside
(``deferred``), scrubbed, and settled at the end, when every parent the subject owns is known
(``attributed``). Both are in the checkpoint.

A delete (``delete_verdict``) deletes only what the subject owns; what names them otherwise is for review.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from shared.domain.catalog import Catalog
from shared.domain.contract import Target
from shared.domain.scrub import scrub_record
from shared.domain.subject import SubjectMatcher
from shared.domain.urls import strip_query

Match = Literal["identity", "parent", "mention"]
OWNED: tuple[Match, ...] = ("identity", "parent")  # a record the subject owns: what hangs off it is theirs too


@dataclass(frozen=True)
class Verdict:
    match: Match | None
    deferred: bool = False  # kept aside until the end: its parent may still turn out to be the subject's


class SubjectScope:
    """Thread-safe. ``judge`` each record as it is read; ``resolve`` the deferred ones once all are read."""

    def __init__(self, matcher: SubjectMatcher, catalog: Catalog, requested: set[str]) -> None:
        self.matcher = matcher
        self.catalog = catalog
        self.requested = requested
        self.attributed: dict[tuple[str, str], set[str]] = {}  # (workspace, kind) -> ids the subject owns
        self.deferred: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def judge(self, target: Target, kind_name: str, record: Any, rid: str, source: str, *, inherited: bool) -> Verdict:
        match: Any = self.matcher.match(kind_name, record, inherited=inherited)
        if match in OWNED:
            with self._lock:
                self.attributed.setdefault((target.resource_id, kind_name), set()).add(rid)
        inherit = self.catalog.kinds[kind_name].inherit
        if inherit and match in (None, "mention") and kind_name in self.requested:
            # whether its parent (say, the run of a metric) is the subject's is known only at the end
            kept, scrubbed = scrub_record(record, self.catalog.secret_field_names)  # kept in state: scrubbed first
            with self._lock:
                self.deferred.append(
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
            return Verdict(match, deferred=True)
        return Verdict(match)

    def resolve(self) -> Iterator[tuple[dict[str, Any], Match | None]]:
        """Each deferred record with its final match (``parent`` when its parent turned out to be the subject's)."""
        deferred, self.deferred = self.deferred, []
        for entry in deferred:
            inherit = self.catalog.kinds[entry["kind"]].inherit
            assert inherit
            parents = self.attributed.get((entry["target"], inherit.kind), set())
            record = entry["record"]
            parent = record.get(inherit.field) if isinstance(record, dict) else None
            match: Match | None = "parent" if isinstance(parent, (str, int)) and str(parent) in parents else entry["match"]
            yield entry, match

    def restore(self, attributed: dict[tuple[str, str], list[str]], deferred: list[dict[str, Any]]) -> None:
        self.attributed = {key: set(ids) for key, ids in attributed.items()}
        self.deferred = list(deferred)


def delete_verdict(matcher: SubjectMatcher, kind_name: str, record: Any) -> Literal["owner", "identity", "mention"] | None:
    """``owner``: the subject owns the record (it is deleted); ``identity`` or ``mention``: it names them
    otherwise (listed for review, never deleted); None: it is not theirs."""
    if matcher.by_owner(kind_name, record):
        return "owner"
    if matcher.by_identity(kind_name, record):
        return "identity"
    return "mention" if matcher.by_mention(record) else None


def tally(matches: dict[str, dict[str, int]], kind_name: str, match: str | None) -> None:
    """Count one record of a kind read in subject scope, and by what it matched (if it did)."""
    counts = matches.setdefault(kind_name, {"scanned": 0, "identity": 0, "parent": 0, "mention": 0})
    counts["scanned"] += 1
    if match:
        counts[match] += 1


__all__ = ["OWNED", "Match", "SubjectScope", "Verdict", "delete_verdict", "tally"]
