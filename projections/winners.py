"""Reducing claims to the winning one per entity, in memory, for a rebuild.

Per entity it keeps the greatest claim key, the position of the event that made it, whether
any claim deleted the entity and the earliest delete time: the same rule as the live upsert
(``projections.apply``), and like it commutative: the log is read in position order, which is
not the entities' order.
"""

from __future__ import annotations

from projections.fold import Claim, ClaimKey

Entry = tuple[ClaimKey, int, bool, str | None]
"""``(best key, its event's position, deleted, deleted_at)``."""
Winner = tuple[str, str, int, bool, str | None]
"""``(table, entity id, position of the winning event, deleted, deleted_at)``."""


def _earliest(a: str | None, b: str | None) -> str | None:
    return min(a, b) if a is not None and b is not None else a or b


def _combine(old: Entry, new: Entry) -> Entry:
    key, position = (new[0], new[1]) if new[0] > old[0] else (old[0], old[1])
    return key, position, old[2] or new[2], _earliest(old[3], new[3])


class Winners:
    """The best claim seen per entity (table and id), and its entity's deletion."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Entry] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, found: Claim, position: int) -> None:
        entity = (found.spec.table, found.entity_id)
        new: Entry = (found.key, position, found.is_delete, found.deleted_at)
        old = self.entries.get(entity)
        self.entries[entity] = new if old is None else _combine(old, new)

    def ordered(self) -> list[Winner]:
        """Every entity's winner, in (table, id) order: the order its rows are best written in
        (appending to the tables' primary-key B-trees instead of inserting at random)."""
        return [(table, entity_id, e[1], e[2], e[3])
                for (table, entity_id), e in sorted(self.entries.items())]  # fmt: skip
