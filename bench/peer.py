"""The peer: the ``eventsourcing`` library (SQLite persistence, a file database) on the same
events: ``python -m bench.peer --events N --db PATH`` prints one JSON object.

What is measured, all in this one process on a fresh database:

* **durable append**: every Clerk event becomes one event of an aggregate (one aggregate per
  Clerk entity, its id derived from Clerk's), saved by ``Application.save`` in its own
  transaction: the library's WAL database with SQLite's default ``synchronous=FULL``, so one
  fsync'd commit per event. Bodies are parsed before the clock starts and aggregates stay in
  memory (no repository reads while appending): the library's best case.
* **read back (notifications)**: the whole log in order through the recorder
  (``select_notifications``, 1,000 at a time), each turned into a domain event object by the
  application's mapper: the library's way to feed a projection, so the peer of a rebuild.
* **read back (aggregates)**: ``repository.get`` of every aggregate, replaying its events.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import orjson
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from bench.bodies import Renderer
from bench.profile import QUICK, Profile
from bench.servers import PROJECT
from bench.stats import Section
from bench.workload import plan
from eventstore.engine import sqlite3

SEED = 11
PAGE = 1000


class ClerkEntity(Aggregate):
    """One Clerk entity (a user, a session, ...) and the snapshots its events carried."""

    @staticmethod
    def create_id(clerk_id: str, event_type: str, data: dict[str, Any]) -> UUID:
        return uuid5(NAMESPACE_URL, clerk_id)

    @event("Seen")
    def __init__(self, clerk_id: str, event_type: str, data: dict[str, Any]) -> None:
        self.clerk_id = clerk_id
        self.event_type = event_type
        self.data = data

    @event("Changed")
    def change(self, event_type: str, data: dict[str, Any]) -> None:
        self.event_type = event_type
        self.data = data


class Audit(Application[UUID]):
    """The peer application."""


def _events(count: int) -> list[tuple[str, str, dict[str, Any]]]:
    renderer = Renderer()
    rendered = (renderer.render(spec) for spec in plan(count, seed=SEED))
    return [(e.object_id, e.event_type, orjson.loads(e.body)["data"]) for e in rendered]


def _append(app: Audit, events: list[tuple[str, str, dict[str, Any]]]) -> dict[str, ClerkEntity]:
    entities: dict[str, ClerkEntity] = {}
    for clerk_id, event_type, data in events:
        entity = entities.get(clerk_id)
        if entity is None:
            entity = entities[clerk_id] = ClerkEntity(clerk_id, event_type, data)
        else:
            entity.change(event_type, data)
        app.save(entity)
    return entities


def _read_notifications(app: Audit) -> int:
    count, start = 0, 1
    while notifications := app.recorder.select_notifications(start, PAGE):
        for notification in notifications:
            app.mapper.to_domain_event(notification)
        count += len(notifications)
        start = notifications[-1].id + 1
    return count


def _read_aggregates(app: Audit, ids: list[UUID]) -> int:
    return sum(app.repository.get(aggregate_id).version for aggregate_id in ids)


def _timed(function: Any, *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def _pragmas(db_path: Path) -> dict[str, Any]:
    conn = sqlite3.connect(db_path)
    try:
        (journal,) = conn.execute("PRAGMA journal_mode").fetchone()
        (synchronous,) = conn.execute("PRAGMA synchronous").fetchone()
        return {"journal_mode": journal, "synchronous": synchronous}
    finally:
        conn.close()


def measure(events_count: int, db_path: Path) -> dict[str, Any]:
    """Append ``events_count`` events durably, then read them back both ways."""
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(db_path)}
    events = _events(events_count)
    app = Audit(env=env)
    entities, append_s = _timed(_append, app, events)
    app.close()
    reader = Audit(env=env)
    read, read_s = _timed(_read_notifications, reader)
    ids = [entity.id for entity in entities.values()]
    replayed, aggregates_s = _timed(_read_aggregates, reader, ids)
    reader.close()
    return {
        "events": len(events),
        "aggregates": len(ids),
        "append_per_s": len(events) / append_s,
        "read_per_s": read / read_s,
        "aggregates_events_per_s": replayed / aggregates_s,
        **_pragmas(db_path),
    }


_FIGURES = (
    ("append_per_s", "durable appends per second (one transaction each)", "events/s"),
    ("read_per_s", "read back as domain events, in log order", "events/s"),
    ("aggregates_events_per_s", "read back as aggregates (repository.get)", "events/s"),
)


def run_peer(profile: Profile, work: Path) -> Section:
    """Each run in a fresh process on a fresh database file."""
    section = Section("Peer: eventsourcing")
    db_path = work / "peer.db"
    for round_ in range(profile.runs):
        print(f"  peer: round {round_ + 1}/{profile.runs}", file=sys.stderr)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db_path}{suffix}").unlink(missing_ok=True)
        command = [sys.executable, "-m", "bench.peer", "--events", str(profile.peer_events)]
        done = subprocess.run(
            [*command, "--db", str(db_path)],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stdout)
        for key, label, unit in _FIGURES:
            section.figure(key, label, unit).add(result[key])
        print(f"    eventsourcing: {result['append_per_s']:,.0f} appends/s, "
              f"{result['read_per_s']:,.0f} reads/s", file=sys.stderr)  # fmt: skip
    section.notes.append(
        f"{profile.peer_events:,} events on {result['aggregates']:,} aggregates per run; "
        f"SQLite journal_mode={result['journal_mode']}, synchronous={result['synchronous']} "
        "(2 = FULL, the default; the library does not set it)"
    )
    return section


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__)
    parser.add_argument("--events", type=int, default=QUICK.peer_events)
    parser.add_argument("--db", type=Path, required=True)
    args = parser.parse_args()
    print(json.dumps(measure(args.events, args.db)))


if __name__ == "__main__":
    main()
