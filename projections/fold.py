"""What one logged event contributes to the projections: a timeline row and, for a known
object with an ``id``, a :class:`Claim` on that entity (CONTRACT §6).

A claim is ranked by :attr:`Claim.key`, ``(full, version_ms, version_rank, event_id)``: a full
snapshot beats a delete stub, then the greatest version wins. Taking the maximum of that key,
OR-ing ``deleted`` and taking the earliest ``deleted_at`` are all commutative, associative and
idempotent, so the state does not depend on arrival order or duplicates. The live path
(``projections.apply``) and the rebuild (``projections.rebuild``) both apply this same rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from eventstore.envelope import load_json, split_type
from eventstore.timefmt import iso_ms, occurred_ms
from projections.entities import BY_OBJECT_TYPE, EntitySpec
from projections.fields import Doc, iso, ms, obj, text
from projections.timeline import timeline_fields

RANK_CREATED, RANK_OTHER, RANK_DELETED = 0, 1, 2

ClaimKey = tuple[bool, int, int, str]
TimelineRow = tuple[Any, ...]
EntityRow = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """A verified, non-quarantined event of the log, parsed."""

    position: int
    event_id: str
    event_type: str
    doc: Doc

    @property
    def data(self) -> Doc | None:
        return obj(self.doc, "data")


def parse_logged(position: int, event_id: str, body: bytes) -> LoggedEvent | None:
    """The event at ``position``; None if its body is not an event (never projected)."""
    doc = load_json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        return None
    return LoggedEvent(position, event_id, doc["type"], doc)


@dataclass(frozen=True, slots=True)
class Claim:
    """What one event says about one entity."""

    spec: EntitySpec
    entity_id: str
    full: bool
    """A snapshot of the object, not a delete stub (``{"id", "deleted": true}``)."""
    version_ms: int
    version_rank: int
    event_id: str
    is_delete: bool
    deleted_at: str | None
    """The event's time when it is a delete."""

    @property
    def key(self) -> ClaimKey:
        return (self.full, self.version_ms, self.version_rank, self.event_id)


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


def occurred_at(event: LoggedEvent) -> str | None:
    value = occurred_ms(event.doc.get("timestamp"), event.data)
    return iso_ms(value) if value is not None else None


def is_stub(data: Doc) -> bool:
    return data.get("deleted") is True and ms(data, "created_at") is None


def claim(event: LoggedEvent) -> Claim | None:
    """The event's claim on its entity; None for unknown types and objects without an id."""
    object_type, action = split_type(event.event_type)
    spec = BY_OBJECT_TYPE.get(object_type) if object_type else None
    data = event.data
    entity_id = text(data, "id")
    if spec is None or data is None or entity_id is None:
        return None
    is_delete = action == "deleted"
    return Claim(
        spec=spec,
        entity_id=entity_id,
        full=not (is_delete and is_stub(data)),
        version_ms=version_ms(event.doc, data),
        version_rank=version_rank(action),
        event_id=event.event_id,
        is_delete=is_delete,
        deleted_at=occurred_at(event) if is_delete else None,
    )


def dump_json(value: object) -> str:
    """Compact JSON text of a parsed value (integers past 64 bits included)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def entity_row(
    found: Claim, event: LoggedEvent, deletion: tuple[bool, str | None] | None = None
) -> EntityRow:
    """The row ``found`` would write: ``id``, the flattened columns, then COMMON_COLUMNS.

    :param deletion: ``(deleted, deleted_at)`` of the entity over all its events, when known
        (a rebuild); else this event's own.
    """
    deleted, deleted_at = deletion or (found.is_delete, found.deleted_at)
    data = event.data if found.full else None
    if data is None:
        flattened: list[Any] = [None] * len(found.spec.columns)
        created = updated = payload = None
    else:
        flattened = [column.extract(data) for column in found.spec.columns]
        created = iso(data, "created_at") or iso(data, "created_at_ms")
        updated, payload = iso(data, "updated_at"), dump_json(data)
    return (
        found.entity_id, *flattened, created, updated, int(deleted), deleted_at, payload,
        found.event_id, found.version_ms, found.version_rank,
    )  # fmt: skip


def timeline_row(event: LoggedEvent) -> TimelineRow:
    """``audit_timeline`` values, in the order of ``projections.schema.TIMELINE_COLUMNS``."""
    object_type, _ = split_type(event.event_type)
    fields = timeline_fields(event.event_type, event.doc, event.data)
    return (
        event.position, event.event_id, occurred_at(event), event.event_type, object_type,
        text(event.data, "id"), *fields,
    )  # fmt: skip
