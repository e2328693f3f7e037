"""Reducing claims to the winning one per entity, in memory, for a rebuild.

Per entity it keeps the greatest claim key, the position of the event that made it, whether
any claim deleted the entity and the earliest delete time: the same rule as the live upsert
(``projections.apply``), and like it commutative: the log is read in position order, which is
not the entities' order.
"""

from __future__ import annotations

from collections.abc import Iterator

from projections.fold import ClaimKey

Entry = tuple[ClaimKey, int, bool, str | None]
"""``(best key, its event's position, deleted, deleted_at)``."""
Winner = tuple[str, str, int, bool, str | None]
"""``(table, entity id, position of the winning event, deleted, deleted_at)``."""
Claimed = tuple[str, str, ClaimKey, int, bool, str | None]
"""A claim as a rebuild's worker reports it: ``(table, entity id, key, position of its event,
is_delete, deleted_at)``."""


def _earliest(a: str | None, b: str | None) -> str | None:
    return min(a, b) if a is not None and b is not None else a or b


def _combine(old: Entry, new: Entry) -> Entry:
    key, position = (new[0], new[1]) if new[0] > old[0] else (old[0], old[1])
    return key, position, old[2] or new[2], _earliest(old[3], new[3])


class Winners:
    """The best claim seen per entity, and its entity's deletion.

    A dict of entries per table, keyed by entity id: at a million events a rebuild holds
    hundreds of thousands of entities, so an entry is one small tuple and nothing more.
    """

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, Entry]] = {}

    def __len__(self) -> int:
        return sum(len(entries) for entries in self.tables.values())

    def add(
        self, table: str, entity_id: str, key: ClaimKey, position: int, is_delete: bool,
        deleted_at: str | None,
    ) -> bool:  # fmt: skip
        """Add a claim; returns whether it is now its entity's best."""
        entries = self.tables.get(table)
        if entries is None:
            entries = self.tables[table] = {}
        new: Entry = (key, position, is_delete, deleted_at)
        old = entries.get(entity_id)
        entries[entity_id] = new if old is None else _combine(old, new)
        return old is None or key > old[0]

    def merge(self, tables: dict[str, dict[str, Entry]]) -> None:
        """Add the entries another :class:`Winners` reduced (a worker's, for its part of the
        log)."""
        for table, theirs in tables.items():
            entries = self.tables.get(table)
            if entries is None:
                self.tables[table] = theirs
                continue
            for entity_id, new in theirs.items():
                old = entries.get(entity_id)
                entries[entity_id] = new if old is None else _combine(old, new)

    def ordered(self) -> Iterator[Winner]:
        """Every entity's winner, in (table, id) order: the order its rows are best written in
        (appending to the tables' primary-key B-trees instead of inserting at random)."""
        for table in sorted(self.tables):
            entries = self.tables[table]
            for entity_id in sorted(entries):
                _, position, deleted, deleted_at = entries[entity_id]
                yield table, entity_id, position, deleted, deleted_at
