"""Hypothesis strategies for Clerk histories: users, organizations, memberships, invitations
and sessions, each created, updated several times (with ties in ``updated_at`` on purpose) and
sometimes deleted, as stubs or full objects the way Clerk sends them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from hypothesis import strategies as st

BASE_MS = 1_786_000_000_000


@dataclass(frozen=True)
class Event:
    event_id: str
    event_type: str
    entity_id: str
    body: bytes
    full: bool
    """Carries a snapshot of the entity (not a delete stub)."""
    version: tuple[int, int, str]
    """``(version_ms, version_rank, event_id)`` as CONTRACT §6 defines it."""

    @property
    def object_type(self) -> str:
        return self.event_type.split(".")[0]

    @property
    def is_delete(self) -> bool:
        return self.event_type.endswith(".deleted")


def _rank(action: str) -> int:
    return 0 if action == "created" else 2 if action == "deleted" else 1


def envelope(event_type: str, data: dict[str, Any], timestamp: int | None) -> bytes:
    doc: dict[str, Any] = {"data": data, "object": "event", "type": event_type}
    if timestamp is not None:
        doc["timestamp"] = timestamp
    doc["event_attributes"] = {"http_request": {"client_ip": "192.0.2.1", "user_agent": "t"}}
    return orjson.dumps(doc)


def _snapshot(kind: str, entity_id: str, n: int, created: int, updated: int) -> dict[str, Any]:
    common = {"id": entity_id, "created_at": created, "updated_at": updated}
    if kind == "user":
        return {**common, "first_name": f"First{n}", "last_name": "Last", "username": None}
    if kind == "organization":
        return {**common, "name": f"Org {n}", "slug": f"org-{entity_id[-3:]}"}
    if kind == "organizationMembership":
        return {
            **common,
            "role": f"org:role{n}",
            "organization": {"id": "org_a", "name": "A"},
            "public_user_data": {"user_id": "user_a", "first_name": "Ann"},
        }
    if kind == "organizationInvitation":
        return {
            **common,
            "email_address": "a@example.com",
            "organization_id": "org_a",
            "status": ("pending", "accepted", "revoked")[n % 3],
            "role": "org:member",
        }
    return {
        **common,
        "user_id": "user_a",
        "client_id": "client_a",
        "status": ("active", "ended", "revoked")[n % 3],
    }


_ACTIONS = {
    "user": ("updated",),
    "organization": ("updated",),
    "organizationMembership": ("updated",),
    "organizationInvitation": ("accepted", "revoked"),
    "session": ("ended", "removed", "revoked", "pending"),
}
_PREFIX = {
    "user": "user_",
    "organization": "org_",
    "organizationMembership": "orgmem_",
    "organizationInvitation": "orginv_",
    "session": "sess_",
}
_STUB_DELETES = {"user", "organization"}
_FULL_DELETES = {"organizationMembership"}


@st.composite
def entity_history(
    draw: st.DrawFn, kind: str, number: int
) -> list[tuple[str, dict[str, Any], int, bool]]:
    """``[(event_type, data, envelope timestamp, full)]`` for one entity."""
    entity_id = f"{_PREFIX[kind]}{number:03d}"
    created = BASE_MS + draw(st.integers(0, 3)) * 1000
    events = [(f"{kind}.created", _snapshot(kind, entity_id, 0, created, created), created, True)]
    updated = created
    for n in range(1, draw(st.integers(0, 3)) + 1):
        updated += draw(st.sampled_from([0, 0, 1, 1000]))  # ties on purpose
        action = draw(st.sampled_from(_ACTIONS[kind]))
        stamp = updated + draw(st.sampled_from([0, 0, 3, -2]))  # -2: the clock skewed
        events.append(
            (f"{kind}.{action}", _snapshot(kind, entity_id, n, created, updated), stamp, True)
        )
    if kind in _STUB_DELETES | _FULL_DELETES and draw(st.booleans()):
        stamp = updated + draw(st.sampled_from([0, 5, 60_000]))
        if kind in _FULL_DELETES:  # the full object, updated_at not bumped (fixture trap)
            data = dict(events[-1][1])
            events.append((f"{kind}.deleted", data, stamp, True))
        else:
            stub = {"id": entity_id, "object": kind, "deleted": True}
            events.append((f"{kind}.deleted", stub, stamp, False))
        if draw(st.integers(0, 3)) == 0:  # a snapshot newer than the delete, arriving late
            later = stamp + 1000
            data = _snapshot(kind, entity_id, 9, created, later)
            events.append((f"{kind}.updated", data, later, True))
    return events


@st.composite
def histories(draw: st.DrawFn, max_entities: int = 6) -> list[Event]:
    """A set of events with unique, randomly ordered event ids."""
    kinds = draw(st.lists(st.sampled_from(sorted(_PREFIX)), min_size=1, max_size=max_entities))
    raw = [e for n, kind in enumerate(kinds) for e in draw(entity_history(kind, n))]
    ids = draw(st.lists(st.integers(0, 10**6), min_size=len(raw), max_size=len(raw), unique=True))
    events = []
    for (event_type, data, stamp, full), number in zip(raw, ids, strict=True):
        event_id = f"msg_{number:07d}"
        version_ms = data.get("updated_at") or stamp or data.get("created_at") or 0
        rank = _rank(event_type.split(".")[1])
        events.append(
            Event(
                event_id,
                event_type,
                data["id"],
                envelope(event_type, data, stamp),
                full,
                (version_ms, rank, event_id),
            )
        )
    return events


@st.composite
def deliveries(draw: st.DrawFn, events: list[Event]) -> list[Event]:
    """The events in any order, some of them delivered more than once."""
    order = draw(st.permutations(events))
    extra = draw(st.lists(st.sampled_from(events), max_size=len(events))) if events else []
    mixed = list(order) + extra
    return draw(st.permutations(mixed))
