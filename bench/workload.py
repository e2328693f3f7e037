"""The benchmark workload: a deterministic plan of Clerk events and their bodies.

An event is planned as one packed integer (entity, step, kind, echo) so a plan of a million
events is cheap to build, shuffle, split into chunks and send to worker processes; the body
of an event is a pure function of that integer. The plan covers users, organizations,
memberships and sessions with several updates per entity, about 5% deleted entities and about
5% *echoes* (a second event with a new ``event_id`` but a byte-identical body), in shuffled
order: most entities have events that arrive before their ``created``.
"""

from __future__ import annotations

from enum import IntEnum
from random import Random


class Kind(IntEnum):
    """The event type of a planned event."""

    USER_CREATED = 0
    USER_UPDATED = 1
    USER_DELETED = 2
    ORG_CREATED = 3
    ORG_UPDATED = 4
    ORG_DELETED = 5
    MEMBERSHIP_CREATED = 6
    MEMBERSHIP_UPDATED = 7
    MEMBERSHIP_DELETED = 8
    SESSION_CREATED = 9
    SESSION_ENDED = 10
    SESSION_REVOKED = 11
    SESSION_REMOVED = 12


EVENT_TYPES = {
    Kind.USER_CREATED: "user.created",
    Kind.USER_UPDATED: "user.updated",
    Kind.USER_DELETED: "user.deleted",
    Kind.ORG_CREATED: "organization.created",
    Kind.ORG_UPDATED: "organization.updated",
    Kind.ORG_DELETED: "organization.deleted",
    Kind.MEMBERSHIP_CREATED: "organizationMembership.created",
    Kind.MEMBERSHIP_UPDATED: "organizationMembership.updated",
    Kind.MEMBERSHIP_DELETED: "organizationMembership.deleted",
    Kind.SESSION_CREATED: "session.created",
    Kind.SESSION_ENDED: "session.ended",
    Kind.SESSION_REVOKED: "session.revoked",
    Kind.SESSION_REMOVED: "session.removed",
}


def pack(entity: int, step: int, kind: Kind, *, echo: bool = False) -> int:
    """One planned event as an integer (``step`` < 128)."""
    return entity << 12 | step << 5 | int(kind) << 1 | int(echo)


def unpack(spec: int) -> tuple[int, int, Kind, bool]:
    """``(entity, step, kind, echo)`` of a packed event."""
    return spec >> 12, spec >> 5 & 0x7F, Kind(spec >> 1 & 0xF), bool(spec & 1)


def _history(rng: Random, entity: int, kinds: list[Kind]) -> list[int]:
    """One entity's events, step by step, with an echo for ~5% of the non-created ones."""
    specs = []
    for step, kind in enumerate(kinds):
        specs.append(pack(entity, step, kind))
        if step and rng.random() < 0.05:
            specs.append(pack(entity, step, kind, echo=True))
    return specs


def _lifecycle(rng: Random, created: Kind, updated: Kind, deleted: Kind, most: int) -> list[Kind]:
    kinds = [created] + [updated] * rng.randint(1, most)
    return [*kinds, deleted] if rng.random() < 0.05 else kinds


def _session_kinds(rng: Random) -> list[Kind]:
    if rng.random() < 0.1:
        return [Kind.SESSION_CREATED]
    ending = rng.choice((Kind.SESSION_ENDED,) * 2 + (Kind.SESSION_REVOKED, Kind.SESSION_REMOVED))
    return [Kind.SESSION_CREATED, ending]


def _user_cluster(rng: Random, user: int) -> list[int]:
    """A user's events with their sessions and memberships (and every tenth user's org)."""
    kinds = _lifecycle(rng, Kind.USER_CREATED, Kind.USER_UPDATED, Kind.USER_DELETED, 5)
    specs = _history(rng, user, kinds)
    if user % 10 == 0:
        kinds = _lifecycle(rng, Kind.ORG_CREATED, Kind.ORG_UPDATED, Kind.ORG_DELETED, 4)
        specs += _history(rng, user // 10, kinds)
    for slot in range(rng.choice((1, 1, 2, 2, 2, 3))):
        specs += _history(rng, user * 4 + slot, _session_kinds(rng))
    for slot in range(rng.choice((0, 1, 1, 1, 2))):
        kinds = _lifecycle(
            rng, Kind.MEMBERSHIP_CREATED, Kind.MEMBERSHIP_UPDATED, Kind.MEMBERSHIP_DELETED, 2
        )
        specs += _history(rng, user * 2 + slot, kinds)
    return specs


def plan(events: int, *, seed: int) -> list[int]:
    """``events`` packed events for as many users as it takes, shuffled."""
    rng = Random(seed)
    specs: list[int] = []
    user = 0
    while len(specs) < events:
        specs += _user_cluster(rng, user)
        user += 1
    del specs[events:]
    rng.shuffle(specs)
    return specs
