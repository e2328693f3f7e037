"""Bytes on disk: the log and the projections file, per event and against the bodies they hold.

The log's tables and indexes are measured with SQLite's ``dbstat`` virtual table (every page
of each B-tree, overflow pages included, whole pages: what the file spends on them); files by
their size (the write-ahead log included, the projections' symlink followed).
"""

from __future__ import annotations

import json
import sqlite3 as system_sqlite3  # dbstat: in Debian's build, not pysqlite3's
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from bench.genlog import ensure_log
from bench.profile import Profile
from bench.rebuild import measure
from bench.servers import BIN
from bench.stats import Section, ratio
from eventstore.engine import sqlite3
from eventstore.paths import default_projections_path
from projections.tables import checkpoint as checkpoint_of

Usage = dict[str, Any]
USAGE_VERSION = 2
"""Part of the cached usage's key: changes whenever :func:`log_usage` measures differently."""


def file_bytes(path: Path) -> int:
    """The size of the SQLite file at ``path`` (a symlink is followed) and of its WAL."""
    real = path.resolve()
    return sum(p.stat().st_size for p in (real, Path(f"{real}-wal")) if p.exists())


def wal_bytes(path: Path) -> int:
    wal = Path(f"{path.resolve()}-wal")
    return wal.stat().st_size if wal.exists() else 0


def checkpoint(path: Path) -> None:
    """Move the WAL of a store nobody else has open into its file (and empty the WAL), so that
    its size is that of its data."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _reader(path: Path) -> sqlite3.Connection:
    """A read-only connection with ``dbstat``: nothing else in this process has the file open."""
    return system_sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def object_bytes(conn: sqlite3.Connection) -> dict[str, int]:
    """Bytes of pages used by each table and index (``dbstat``, aggregated per object)."""
    # Page by page: dbstat's aggregated rows add pgsize up in 32 bits (negative past 2 GiB).
    rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    return {str(name): int(size) for name, size in rows}


def _events_indexes(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM pragma_index_list('events')").fetchall()
    return [str(name) for (name,) in rows]


def log_usage(path: Path) -> Usage:
    """What the log at ``path`` holds and what it takes on disk."""
    with closing(_reader(path)) as conn:
        (events, body_bytes) = conn.execute(
            "SELECT count(*), coalesce(sum(length(body)), 0) FROM events"
        ).fetchone()
        (deliveries,) = conn.execute("SELECT count(*) FROM deliveries").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        objects = object_bytes(conn)
        indexes = _events_indexes(conn)
    return {
        "events": int(events),
        "deliveries": int(deliveries),
        "body_bytes": int(body_bytes),
        "file_bytes": file_bytes(path),
        "wal_bytes": wal_bytes(path),
        "page_size": int(page_size),
        "events_table_bytes": objects.get("events", 0),
        "events_index_bytes": sum(objects.get(name, 0) for name in indexes),
        "deliveries_bytes": sum(v for k, v in objects.items() if k.startswith("deliveries")),
    }


def cached_log_usage(path: Path) -> Usage:
    """:func:`log_usage` of a log that does not change (the generated one), cached beside it
    (measuring a million events reads the whole file)."""
    stat = path.stat()
    cache = path.with_name(f"{path.name}.usage.json")
    key = [USAGE_VERSION, stat.st_size, stat.st_mtime_ns]
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            usage: Usage = saved["usage"]
            return usage
    usage = log_usage(path)
    cache.write_text(json.dumps({"key": key, "usage": usage}))
    return usage


def projections_usage(log_path: Path) -> Usage:
    """The default projections file of the log at ``log_path``: its size, page size and
    checkpoint (an empty dict if there is none)."""
    path = default_projections_path(log_path)
    if not path.resolve().is_file():
        return {}
    with closing(_reader(path)) as conn:
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        objects = object_bytes(conn)
    return {
        "file": path.resolve().name,
        "file_bytes": file_bytes(path),
        "wal_bytes": wal_bytes(path),
        "page_size": int(page_size),
        "largest_objects": dict(sorted(objects.items(), key=lambda kv: -kv[1])[:5]),
    }


def _projected_upto(log_path: Path) -> int | None:
    """The checkpoint of the log's projections file, None if there is none."""
    path = default_projections_path(log_path)
    if not path.resolve().is_file():
        return None
    with closing(_reader(path)) as conn:
        return checkpoint_of(conn)


def _ensure_projections(
    log_path: Path, events: int, timeout: float, may_rebuild: bool, section: Section
) -> None:
    """Rebuild the log's projections if the rebuild section has not left them complete (within
    the rebuild's time limit; a note says so if it does not finish)."""
    if _projected_upto(log_path) == events:
        return
    if not may_rebuild:
        section.notes.append("the projections could not be measured: the rebuild failed")
        return
    print("  disk: building the projections (clerk-audit rebuild)", file=sys.stderr)
    # Under bench.measure, which stops the rebuild's worker processes too at the time limit.
    done = measure([str(BIN / "clerk-audit"), "rebuild", "--db", str(log_path)], timeout)
    if done["returncode"] != 0:
        why = "did not finish in time" if done["returncode"] is None else "failed"
        section.notes.append(f"the projections could not be measured: the rebuild {why}")
        return
    section.notes.append("the projections were built for this section (the rebuild did not run)")


def run_disk(profile: Profile, work: Path) -> Section:
    """Bytes on disk of the generated log and of the projections a rebuild makes of it."""
    section = Section("Disk")
    log_path = ensure_log(work, profile.log_events)
    log = cached_log_usage(log_path)
    events, body = log["events"], log["body_bytes"]
    _ensure_projections(
        log_path, events, profile.rebuild_timeout_s, profile.disk_may_rebuild, section
    )
    complete = _projected_upto(log_path) == events
    projections = projections_usage(log_path) if complete else {}

    def add(key: str, label: str, unit: str, value: float) -> None:
        section.figure(key, label, unit).add(value)

    add("body_bytes_per_event", "event bodies: bytes per event", "bytes", body / events)
    add("log.bytes_per_event", "log file: bytes per event", "bytes", log["file_bytes"] / events)
    add("log.per_body_byte", "log file ÷ body bytes", "x", ratio(log["file_bytes"], body))
    add("events_table.per_body_byte", "`events` table alone (dbstat) ÷ body bytes", "x",
        ratio(log["events_table_bytes"], body))  # fmt: skip
    add("events_indexes.bytes_per_event", "indexes of `events` (dbstat): bytes per event",
        "bytes", log["events_index_bytes"] / events)  # fmt: skip
    if projections:
        add("projections.bytes_per_event", "projections file: bytes per event", "bytes",
            projections["file_bytes"] / events)  # fmt: skip
        add("store.bytes_per_event", "log + projections: bytes per event", "bytes",
            (log["file_bytes"] + projections["file_bytes"]) / events)  # fmt: skip
        largest = ", ".join(f"{name} {size / events:,.0f}"
                            for name, size in projections["largest_objects"].items())  # fmt: skip
        section.notes.append(
            f"projections ({projections['file']}, {projections['page_size']:,}-byte pages): "
            f"largest tables and indexes, bytes per event: {largest}"
        )
    section.notes.append(
        f"the generated log of {events:,} events ({body / 1e9:.2f} GB of bodies, "
        f"{log['page_size']:,}-byte pages, {log['file_bytes'] / 1e9:.2f} GB): `events` and its "
        f"indexes only, no `deliveries` rows (the ingest section measures a log with them)"
    )
    measured = f"{projections['file_bytes'] / events:,.0f} B/event" if projections else "n/a"
    print(f"    disk: log {log['file_bytes'] / events:,.0f} B/event "
          f"({ratio(log['file_bytes'], body):.2f} x bodies), projections {measured}",
          file=sys.stderr)  # fmt: skip
    return section
