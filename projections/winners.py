"""Choosing each entity's winning claim for a rebuild: the rule of ``projections.apply``.

A rebuild's workers keep, per chunk of the log, each entity's best claim (its *candidate*, with
the entity row it would write) and every claim that deletes an entity (``projections.bulk``).
An entity's winner is its greatest candidate by claim key, ``(full, version_ms, version_rank,
event_id)``; the entity is deleted if any of its claims deletes it, at the earliest delete
time. Max, OR and min are commutative, associative and idempotent, so which chunk saw which
claim does not matter.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import groupby
from operator import itemgetter

Candidate = tuple[str, bool, int, int, str, int]
"""``(entity id, full, version_ms, version_rank, event_id, position of its event)``."""
Winner = tuple[int, int, str | None]
"""``(position of the winning event, deleted, deleted_at)``."""

_ID = itemgetter(0)
_KEY = itemgetter(slice(1, 5))


def winners(candidates: Iterable[Candidate], deletes: Mapping[str, str | None]) -> Iterator[Winner]:
    """Each entity's winner, from its candidates (grouped by entity id, as sorted by it), and
    ``deletes``: the earliest delete time of each deleted entity (None if no delete had one)."""
    for entity_id, group in groupby(candidates, key=_ID):
        position = max(group, key=_KEY)[5]
        if entity_id in deletes:
            yield position, 1, deletes[entity_id]
        else:
            yield position, 0, None
