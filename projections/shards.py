"""A rebuild's history, derived in worker processes, each for a shard of the entities.

The rebuild stages every version row (``projections.bulk``) with the timeline position of its
event. Each shard's worker reads its entities' versions from the stage file in version order,
derives their rows with :func:`projections.history.entity_pass` (the projector's own pass) and
writes them into a part file of its own: ``changes``, ``membership_roles``, ``user_bans`` and
the sentences that name changes, by timeline position. The rebuilding process builds indexes
meanwhile, then merges the parts in key order (:func:`merge_history`).

An entity belongs to one shard, by the last character of its id: every version of an entity
is in the same shard, and random ids spread evenly.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

from eventstore.engine import sqlite3
from projections.history import BANS, CHANGES, ROLES, VERSIONS, Derived, entity_pass
from projections.schema import HISTORY_ORDER, TIMELINE, table_ddl
from projections.workers import part_connection

SENTENCES = "sentences"
"""In a part file: ``(position, summary)`` of each version whose sentence names changes."""
BATCH = 20_000
"""Versions derived between two writes to the part file."""
_DERIVED = (CHANGES, ROLES, BANS)


def staged_versions(schema: str, name: str) -> str:
    """``CREATE TABLE`` for version rows as the fold stages them: an ``entity_versions`` row,
    then its event's timeline position (untyped, unindexed: appended in log order)."""
    return f"CREATE TABLE {schema}{name} ({HISTORY_ORDER[VERSIONS]}, action, occurred_at, " \
        "fields, summary, position)"  # fmt: skip


def _shard(shard: int, shards: int) -> tuple[str, tuple[int, int]]:
    return "coalesce(unicode(substr(entity_id, -1)), 0) % ? = ?", (shards, shard)


def _entities(rows: Iterator[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    for _, versions in groupby(rows, key=lambda row: (row[0], row[1])):
        yield list(versions)


def derive_part(stage: str, table: str, part: str, shard: int, shards: int, events: int) -> None:
    """(Run by a worker.) Derive the history of the entities of ``shard`` (of about ``events``
    events) from the version rows staged in ``table`` of the file ``stage`` into the part
    file ``part``."""
    # immutable: nothing writes the stage file any more, and it is read without locks
    source = sqlite3.connect(f"{Path(stage).resolve().as_uri()}?immutable=1", uri=True)
    out = _part(Path(part), events)
    where, params = _shard(shard, shards)
    try:
        cursor = source.execute(
            f"SELECT * FROM {table} WHERE {where} ORDER BY {HISTORY_ORDER[VERSIONS]}", params
        )
        derived, positions = Derived([], [], [], []), dict[str, int]()
        for rows in _entities(iter(cursor)):
            positions.update((row[4], row[9]) for row in rows)
            entity_pass([row[:9] for row in rows], derived)
            if len(derived.summaries) >= BATCH:
                _write(out, derived, positions)
                derived, positions = Derived([], [], [], []), {}
        _write(out, derived, positions)
        out.execute("COMMIT")
    finally:
        out.close()
        source.close()


def _part(path: Path, events: int) -> sqlite3.Connection:
    out = part_connection(path, events)
    for table in _DERIVED:
        out.execute(table_ddl(table, table))
    out.execute(f"CREATE TABLE {SENTENCES} (position INTEGER PRIMARY KEY, summary TEXT)")
    return out


def _write(out: sqlite3.Connection, derived: Derived, positions: dict[str, int]) -> None:
    for table, rows in zip(_DERIVED, derived[:3], strict=True):
        if rows:
            marks = ", ".join("?" * len(rows[0]))
            out.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    out.executemany(
        f"INSERT INTO {SENTENCES} VALUES (?, ?)",
        [(positions[e], final) for final, e, own in derived.summaries if final != own],
    )


def merge_history(conn: sqlite3.Connection, parts: Sequence[Path]) -> None:
    """Copy the derived rows of the part files ``parts`` into the (empty) history tables in
    key order, and write the sentences into the timeline in position order (``conn`` in no
    transaction: it attaches the parts)."""
    names = [f"h{n}" for n in range(len(parts))]
    for name, part in zip(names, parts, strict=True):
        conn.execute(f"ATTACH DATABASE ? AS {name}", (str(part),))
    try:
        conn.execute("BEGIN")
        for table in (*_DERIVED, SENTENCES):
            union = " UNION ALL ".join(f"SELECT * FROM {name}.{table}" for name in names)
            select = f"SELECT * FROM ({union}) ORDER BY {HISTORY_ORDER.get(table, 'position')}"
            if table == SENTENCES:
                conn.execute(
                    f"UPDATE {TIMELINE} SET summary = n.summary FROM ({select}) AS n "
                    f"WHERE {TIMELINE}.position = n.position"
                )
            else:
                conn.execute(f"INSERT INTO main.{table} {select}")
        conn.execute("COMMIT")
    finally:
        for name in names:
            conn.execute(f"DETACH DATABASE {name}")
