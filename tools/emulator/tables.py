"""Ordered tables with keyset paging, shared by the v1 and v2 data."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

JSON = dict[str, Any]


class Table:
    """An ordered id -> item map; every item keeps the sequence number it was added with.

    Continuation tokens carry the last sequence number served (keyset paging), so deleting items
    while a client pages does not make it skip others.
    """

    def __init__(self, items: Iterable[tuple[str, JSON]] = ()) -> None:
        self._rows: dict[str, tuple[int, JSON]] = {}
        self._next_seq = 0
        for key, item in items:
            self.add(key, item)

    def add(self, key: str, item: JSON) -> None:
        self._rows[key] = (self._next_seq, item)
        self._next_seq += 1

    def get(self, key: str) -> JSON | None:
        row = self._rows.get(key)
        return row[1] if row else None

    def pop(self, key: str) -> JSON | None:
        row = self._rows.pop(key, None)
        return row[1] if row else None

    def keys(self) -> list[str]:
        return list(self._rows)

    def values(self) -> list[JSON]:
        return [item for _, item in self._rows.values()]

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def page(self, after: int, size: int, where: Callable[[JSON], bool] | None = None) -> tuple[list[JSON], int, bool]:
        """Items with a sequence number above ``after`` (and passing ``where``): (up to ``size`` items,
        last seq served, more left)."""
        rows = [row for row in self._rows.values() if row[0] > after and (where is None or where(row[1]))]
        chunk = rows[:size]
        last = chunk[-1][0] if chunk else after
        return [item for _, item in chunk], last, len(rows) > size


class CaseInsensitiveTable(Table):
    """ARM names (workspaces, computes) are case-insensitive."""

    def add(self, key: str, item: JSON) -> None:
        super().add(key.lower(), item)

    def get(self, key: str) -> JSON | None:
        return super().get(key.lower())

    def pop(self, key: str) -> JSON | None:
        return super().pop(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())
