"""What one logged event contributes to the projections: a timeline row and, for a known
object with an ``id``, a :class:`Claim` on that entity (CONTRACT §6).

A claim is ranked by :attr:`Claim.key`, ``(full, version_ms, version_rank, event_id)``: a full
snapshot beats a delete stub, then the greatest version wins. Taking the maximum of that key,
OR-ing ``deleted`` and taking the earliest ``deleted_at`` are all commutative, associative and
idempotent, so the state does not depend on arrival order or duplicates. The live path
(``projections.apply``) and the rebuild (``projections.rebuild``) both apply this same rule.

A rebuild runs this for every event of the log, so the per-event records are named tuples
(immutable, and cheap to make) and each event's type and time are worked out once.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from eventstore.envelope import split_type
from eventstore.jsondoc import dump_json, load_json
from eventstore.timefmt import iso_ms, occurred_ms
from projections.entities import BY_OBJECT_TYPE, EntitySpec
from projections.fields import Doc, iso, ms, obj, text
from projections.instance import other_instance
from projections.timeline import timeline_fields
from projections.tracked import TRACKED, tracked_fields

RANK_CREATED, RANK_OTHER, RANK_DELETED = 0, 1, 2

ClaimKey = tuple[bool, int, int, str]
TimelineRow = tuple[Any, ...]
EntityRow = tuple[Any, ...]
VersionRow = tuple[str, str, int, int, str, str | None, str | None, str | None, str]
"""An ``entity_versions`` row (``projections.history``)."""


class LoggedEvent(NamedTuple):
    """A verified, non-quarantined event of the log, parsed."""

    position: int
    event_id: str
    event_type: str
    object_type: str | None
    """The resource part of ``event_type``."""
    action: str | None
    doc: Doc
    data: Doc | None
    occurred_at: str | None
    """Clerk's time for the event (CONTRACT §6), ISO-8601."""
    other_instance: str | None = None
    """The instance the envelope names when it is not the configured one
    (``projections.instance``): such an event claims no entity."""


def parse_logged(
    position: int,
    event_id: str,
    body: bytes,
    long_digits: bool | None = None,
    instance: str | None = None,
) -> LoggedEvent | None:
    """The event at ``position``; None if its body is not an event (never projected).

    :param long_digits: whether ``body`` has a long run of digits, when already known
        (``eventstore.jsondoc.has_long_number``).
    :param instance: the configured Clerk instance (``projections.instance``), if any.
    """
    return logged_event(position, event_id, load_json(body, long_digits), instance)


def logged_event(
    position: int, event_id: str, doc: object, instance: str | None = None
) -> LoggedEvent | None:
    """The event at ``position`` from its parsed body; None if that is not an event."""
    if type(doc) is not dict or type(event_type := doc.get("type")) is not str:
        return None
    object_type, action = split_type(event_type)
    data = obj(doc, "data")
    occurred = occurred_ms(doc.get("timestamp"), data)
    occurred_at = iso_ms(occurred) if occurred is not None else None
    other = other_instance(doc.get("instance_id"), instance)
    return LoggedEvent(
        position, event_id, event_type, object_type, action, doc, data, occurred_at, other
    )


class Claim(NamedTuple):
    """What one event says about one entity."""

    spec: EntitySpec
    entity_id: str
    key: ClaimKey
    """``(full, version_ms, version_rank, event_id)``; ``full`` is False for a delete stub
    (``{"id", "deleted": true}``), which never replaces a snapshot."""
    is_delete: bool
    deleted_at: str | None
    """The event's time when it is a delete."""


def version_rank(action: str | None) -> int:
    """``created`` < any other action < ``deleted``."""
    if action == "created":
        return RANK_CREATED
    return RANK_DELETED if action == "deleted" else RANK_OTHER


def version_ms(doc: Doc, data: Doc) -> int:
    """``data.updated_at``, else the envelope ``timestamp``, else ``data.created_at``, else 0."""
    for value in (ms(data, "updated_at"), ms(doc, "timestamp"), ms(data, "created_at")):
        if value is not None:
            return value
    return 0


def is_stub(data: Doc) -> bool:
    return data.get("deleted") is True and ms(data, "created_at") is None


def claim(event: LoggedEvent) -> Claim | None:
    """The event's claim on its entity; None for unknown types, objects without an id and
    events of another instance."""
    if event.other_instance is not None:
        return None
    spec = BY_OBJECT_TYPE.get(event.object_type) if event.object_type else None
    data = event.data
    entity_id = text(data, "id")
    if spec is None or data is None or entity_id is None:
        return None
    is_delete = event.action == "deleted"
    full = not (is_delete and is_stub(data))
    key = (full, version_ms(event.doc, data), version_rank(event.action), event.event_id)
    return Claim(spec, entity_id, key, is_delete, event.occurred_at if is_delete else None)


def entity_row(
    found: Claim, event: LoggedEvent, deletion: tuple[bool, str | None] | None = None
) -> EntityRow:
    """The row ``found`` would write: ``id``, the flattened columns, then COMMON_COLUMNS.

    :param deletion: ``(deleted, deleted_at)`` of the entity over all its events, when known
        (a rebuild); else this event's own.
    """
    full, version, rank, event_id = found.key
    deleted, deleted_at = deletion or (found.is_delete, found.deleted_at)
    data = event.data if full else None
    if data is None:
        flattened: list[Any] = [None] * len(found.spec.columns)
        created = updated = payload = None
    else:
        flattened = [column.extract(data) for column in found.spec.columns]
        created = iso(data, "created_at") or iso(data, "created_at_ms")
        updated, payload = iso(data, "updated_at"), dump_json(data)
    return (
        found.entity_id, *flattened, created, updated, int(deleted), deleted_at, payload,
        event_id, version, rank,
    )  # fmt: skip


def timeline_row(event: LoggedEvent) -> TimelineRow:
    """``audit_timeline`` values, in the order of ``projections.schema.TIMELINE_COLUMNS``."""
    return (
        event.position, event.event_id, event.occurred_at,
        *timeline_fields(event.object_type, event.action, event.event_type, event.doc, event.data,
                         event.other_instance),
        event.event_type, event.object_type, text(event.data, "id"), event.other_instance,
    )  # fmt: skip


def version_row(found: Claim, event: LoggedEvent, summary: str) -> VersionRow | None:
    """The ``entity_versions`` row of ``found``, for an entity whose changes are tracked
    (``projections.tracked``): its tracked fields, None for a delete, and the event's own
    sentence ``summary``."""
    object_type = event.object_type
    if object_type not in TRACKED or event.data is None:
        return None
    fields = None if found.is_delete else tracked_fields(object_type, event.data)
    _, version, rank, event_id = found.key
    stored = None if fields is None else orjson.dumps(fields).decode()
    return (
        object_type, found.entity_id, version, rank, event_id, event.action, event.occurred_at,
        stored, summary,
    )  # fmt: skip
