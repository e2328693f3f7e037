"""Appending to and reading the ``events`` log and the ``deliveries`` record.

Functions here run inside the caller's transaction (see :func:`eventstore.db.transaction`);
they never commit. The single writer (``eventstore.writer``) is the only caller that appends.
A body is parsed only as far as the ``events`` columns need (``eventstore.envelope``).
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from typing import Any, Literal

from eventstore.chain import GENESIS, link
from eventstore.chain import Row as ChainRow
from eventstore.errors import EventConflict, StoreCorrupt
from eventstore.jsondoc import NotAnEvent, parse_document
from eventstore.records import DeliveryRecord, EventRecord
from eventstore.sql import Sql

EVENT_COLUMNS = (
    "event_id", "event_type", "object_type", "object_id", "instance_id", "occurred_at",
    "received_at", "svix_timestamp", "body", "body_sha256", "status", "quarantine_reason",
)  # fmt: skip
DELIVERY_COLUMNS = (
    "event_id", "received_at", "svix_timestamp", "outcome", "reason", "remote_addr",
    "user_agent", "body_sha256",
)  # fmt: skip
_INSERT_EVENT = f"INSERT INTO events (position, {', '.join(EVENT_COLUMNS)}, chain)"
_INSERT_DELIVERY = f"INSERT INTO deliveries ({', '.join(DELIVERY_COLUMNS)})"
EventRow = tuple[Any, ...]
"""An event's values in :data:`EVENT_COLUMNS` order (what :func:`append_rows` takes)."""
_ROW = operator.attrgetter(*EVENT_COLUMNS)
_ID, _SHA256 = EVENT_COLUMNS.index("event_id"), EVENT_COLUMNS.index("body_sha256")
MAX_ROWS_PER_INSERT = 512
"""Rows per multi-row ``INSERT`` (its parameters stay under SQLite's limit of 32,766)."""


@cache
def _values(insert: str, width: int, rows: int) -> str:
    row = f"({', '.join('?' * width)})"
    return f"{insert} VALUES {', '.join([row] * rows)}"


def insert_rows(conn: Sql, insert: str, rows: Sequence[Sequence[object]]) -> None:
    """``insert`` (``INSERT INTO t (columns)``) of ``rows``, many rows per statement.

    A table with triggers gets a statement journal for every statement, which copies each page
    the statement changes; ``executemany`` runs one statement per row, so every row copied the
    table's and each index's last page again. Statements of power-of-two sizes keep the
    distinct SQL texts (and the statement cache) small. One failing row fails its statement.
    """
    if rows:
        insert_values(conn, insert, len(rows[0]), [v for row in rows for v in row])


def insert_values(conn: Sql, insert: str, width: int, values: Sequence[object]) -> None:
    """:func:`insert_rows` of rows given one after the other in ``values``, ``width`` each."""
    start, rows = 0, len(values) // width
    while start < rows:
        count = min(MAX_ROWS_PER_INSERT, 1 << ((rows - start).bit_length() - 1))
        conn.execute(_values(insert, width, count), values[start * width : (start + count) * width])
        start += count


RESERVED_PREFIX = "clerk-audit."
"""Event types only the store itself writes (``eventstore.redaction``)."""
RESERVED_REASON = "type clerk-audit.* is reserved for the store's own records"


def sha256_hex(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def event_record(
    *, event_id: str, svix_timestamp: int, received_at: str, body: bytes
) -> EventRecord:
    """The log record for a verified body: parsed, or quarantined if it is not an event or
    claims a type reserved for the store's own records (:data:`RESERVED_PREFIX`)."""
    digest = sha256_hex(body)
    try:
        document = parse_document(body)
        if document["type"].startswith(RESERVED_PREFIX):
            raise NotAnEvent(RESERVED_REASON)
    except NotAnEvent as reason:
        return EventRecord(
            event_id, None, None, None, None, None, received_at, svix_timestamp, body, digest,
            "quarantined", str(reason),
        )  # fmt: skip
    from eventstore.envelope import Envelope  # pydantic: verify's workers start without it

    envelope = Envelope.model_validate(document)
    return EventRecord(
        event_id=event_id,
        event_type=envelope.type,
        object_type=envelope.object_type,
        object_id=envelope.object_id,
        instance_id=envelope.instance_id,
        occurred_at=envelope.occurred_at,
        received_at=received_at,
        svix_timestamp=svix_timestamp,
        body=body,
        body_sha256=digest,
        status="ok",
        quarantine_reason=None,
    )


AppendResult = tuple[Literal["stored", "duplicate"], int] | EventConflict
"""What became of one record given to :func:`append_many`: ``("stored", position)`` for a new
event, ``("duplicate", position)`` for one stored before with the same body, or the
:class:`EventConflict` of one stored before with a different body (left untouched)."""


def append_many(conn: Sql, records: Sequence[EventRecord]) -> list[AppendResult]:
    """Append each of ``records`` whose ``event_id`` is not stored yet, in order, with one
    look-up and one insert statement for them all (the writer's group path).

    A record whose ``event_id`` comes earlier in ``records`` counts as stored before. Positions
    follow the log's last one: the caller's ``BEGIN IMMEDIATE`` holds the only write lock, so
    they are the ones SQLite would give. Each new event gets its ``chain`` value from the one
    before it (``eventstore.chain``).
    """
    return append_rows(conn, [event_row(record) for record in records])


def event_row(record: EventRecord) -> EventRow:
    """``record``'s values in :data:`EVENT_COLUMNS` order."""
    row: EventRow = _ROW(record)
    return row


def append_rows(conn: Sql, rows: Sequence[EventRow]) -> list[AppendResult]:
    """:func:`append_many` of events given as :data:`EventRow` tuples (``import`` makes them
    straight from its lines: a million records would cost more than the inserts)."""
    wanted = list({row[_ID] for row in rows})
    found: dict[str, tuple[int, str]] = {
        event_id: (position, sha256)
        for event_id, position, sha256 in conn.execute(
            "SELECT event_id, position, body_sha256 FROM events "
            f"WHERE event_id IN ({', '.join('?' * len(wanted))})",
            wanted,
        )
    }
    position, previous = chain_head(conn)
    results: list[AppendResult] = []
    values: list[object] = []  # the new events' columns, one after the other
    for row in rows:
        event_id, sha256 = row[_ID], row[_SHA256]
        stored = found.get(event_id)
        if stored is None:
            position += 1
            previous = link(previous, position, event_id, sha256)
            found[event_id] = (position, sha256)
            values.append(position)
            values.extend(row)
            values.append(previous.hex())
            results.append(("stored", position))
        elif stored[1] == sha256:
            results.append(("duplicate", stored[0]))
        else:
            results.append(EventConflict(
                f"event {event_id} is already stored (position {stored[0]}) "
                "with a different body; the stored event is kept"
            ))  # fmt: skip
    insert_values(conn, _INSERT_EVENT, len(EVENT_COLUMNS) + 2, values)
    return results


def append(conn: Sql, record: EventRecord) -> tuple[Literal["stored", "duplicate"], int]:
    """Append ``record`` unless its ``event_id`` is stored already (:func:`append_many` of one).

    :raises EventConflict: the ``event_id`` is stored with a different body (left untouched).
    """
    (result,) = append_many(conn, [record])
    if isinstance(result, EventConflict):
        raise result
    return result


def record_deliveries(conn: Sql, deliveries: Iterable[DeliveryRecord]) -> None:
    """Add one ``deliveries`` row for each of ``deliveries``."""
    rows = [tuple(getattr(d, c) for c in DELIVERY_COLUMNS) for d in deliveries]
    insert_rows(conn, _INSERT_DELIVERY, rows)


def record_delivery(conn: Sql, delivery: DeliveryRecord) -> None:
    """Add one ``deliveries`` row."""
    record_deliveries(conn, (delivery,))


def chain_head(conn: Sql) -> tuple[int, bytes]:
    """The last event's position and chain value (0 and the genesis value for an empty log)."""
    row = conn.execute("SELECT position, chain FROM events ORDER BY position DESC LIMIT 1")
    last = row.fetchone()
    if last is None:
        return 0, GENESIS
    if last[1] is None:  # written around the triggers: appending would extend a broken chain
        raise StoreCorrupt(f"the log's last event (position {last[0]}) has no chain value; "
                           "run `clerk-audit verify`", public="the store is damaged")  # fmt: skip
    return int(last[0]), bytes.fromhex(last[1])


def log_position(conn: Sql) -> int:
    """The position of the last stored event (0 for an empty log)."""
    (position,) = conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()
    return int(position)


def chain_rows(
    conn: Sql, first: int = 1, last: int | None = None, batch: int = 2_000
) -> Iterator[list[ChainRow]]:
    """The events from ``first`` to ``last`` (the head, when None) as ``(position, event_id,
    body, body_sha256, chain)``, in position order, ``batch`` at a time."""
    streamed = getattr(conn, "execute_streamed", None)  # PostgreSQL: a server-side cursor
    cursor = (streamed or conn.execute)(
        "SELECT position, event_id, body, body_sha256, chain FROM events "
        "WHERE position BETWEEN ? AND ? ORDER BY position",
        (first, last if last is not None else 2**63 - 1),
    )
    try:
        while rows := cursor.fetchmany(batch):
            yield rows
    finally:
        cursor.close()  # a PostgreSQL server-side cursor is closed even when not read to the end


def chain_at(conn: Sql, position: int) -> str | None:
    """The chain value at ``position`` (None if there is no such event)."""
    row = conn.execute("SELECT chain FROM events WHERE position = ?", (position,)).fetchone()
    return row[0] if row else None


def record_check(
    conn: Sql,
    kind: Literal["verify", "checkpoint"],
    at: str,
    position: int,
    chain: str | None,
    ok: bool,
    detail: str | None = None,
) -> None:
    """Add one ``integrity_checks`` row (inside the caller's transaction)."""
    conn.execute(
        "INSERT INTO integrity_checks (kind, checked_at, position, chain, ok, detail) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (kind, at, position, chain, int(ok), detail),
    )
