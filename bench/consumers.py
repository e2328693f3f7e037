"""Issue 15's figures (section ``consumers`` of ``python -m bench``): the feed, export and
import on the 1M-event log, and ingest with and without feed readers.

Each round, on the cached 1M-event log (read only: ``bench.genlog``):

* **export**: ``clerk-audit export`` (``eventstore.transfer.export_log``) of the whole log to a
  plain NDJSON file, next to a bare ``SELECT`` of every column of the same rows (the read
  ceiling, alternating with it); gzip is timed on the last 100,000 events (its level decides
  that speed, not the export);
* **import**: ``import_file`` of that file into a new store, next to the same lines parsed and
  inserted into a table with no constraint, trigger or chain;
* **feed**: one reader walking ``GET /events`` (``limit=10000``) from 0 to the head of that
  imported store, over HTTP from a real uvicorn server running the app (no projector); the
  reader takes each page's ``next`` and keeps the bytes, as a worker would before parsing.

Then ingest runs at 32 connections (``bench.ingest``'s harness, fresh store each run) without
and with 2 feed readers following the log (``bench.feedreaders``), alternating which goes
first; the ratio of events stored per second is taken within a round. Standalone::

    .venv/bin/python -m bench.consumers [--events N] [--runs R]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import orjson

from bench.deliveries import ensure_pool, new_secret
from bench.genlog import ensure_log, log_position_of
from bench.ingest import OURS, Plan, run_one
from bench.profile import QUICK, Profile, another_round_fits
from bench.servers import remove_store
from bench.stats import Section, ratio
from eventstore.engine import sqlite3
from eventstore.transfer import export_log, import_file

FEED_READERS = 2
GZIP_EVENTS = 100_000
TOKEN = "bench-" + secrets.token_hex(16)
_RUNNING = re.compile(r"Uvicorn running on (http://\S+)")
SERVER = """
import sys, uvicorn
from pathlib import Path
from eventstore.app import create_app
from eventstore.settings import Settings
from eventstore.signing_secrets import parse_secrets
settings = Settings(Path(sys.argv[1]), Path(sys.argv[1] + ".projections"),
                    parse_secrets("whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "bench"),
                    feed_token=sys.argv[2])
uvicorn.run(create_app(settings), host="127.0.0.1", port=0, log_level="info", access_log=False)
"""


def rate(events: int, seconds: float) -> float:
    return events / seconds if seconds else float("inf")


def baseline_select(path: Path) -> float:
    started = time.perf_counter()
    count = 0
    with closing(sqlite3.connect(path)) as conn:
        cursor = conn.execute("SELECT * FROM events ORDER BY position")
        while rows := cursor.fetchmany(5000):
            count += len(rows)
    return rate(count, time.perf_counter() - started)


@contextmanager
def feed_server(path: Path) -> Iterator[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(path), TOKEN],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        for line in process.stdout:
            match = _RUNNING.search(line)
            if match:
                yield match.group(1)
                break
        else:
            raise RuntimeError("the feed server did not start")
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


def _get(sock: socket.socket, request: bytes) -> bytes:
    """One keep-alive ``GET`` on ``sock``: the answer's body (the reader is kept lean, so that
    the server's speed is what is measured)."""
    sock.sendall(request)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65_536)
        if not chunk:
            raise ConnectionError("the feed server closed the connection")
        head += chunk
    head, _, body = head.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"the feed answered {head.splitlines()[0]!r}")
    buffer = bytearray(length)
    buffer[: len(body)] = body
    view, got = memoryview(buffer), len(body)
    while got < length:
        read = sock.recv_into(view[got:])
        if not read:
            raise ConnectionError("the feed server closed the connection")
        got += read
    return bytes(buffer)


def feed(url: str, head: int) -> tuple[float, int]:
    """Events/s and bytes read by one reader walking the log from 0 to ``head``."""
    after, count, size = 0, 0, 0
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        started = time.perf_counter()
        while after < head:
            request = (f"GET /events?after={after}&limit=10000 HTTP/1.1\r\nhost: {host}\r\n"
                       f"authorization: Bearer {TOKEN}\r\n\r\n").encode()  # fmt: skip
            page = _get(sock, request)
            tail = page[page.rindex(b'"next":') + 7 : -1]
            count += int(tail) - after
            after = int(tail)
            size += len(page)
        seconds = time.perf_counter() - started
    return rate(count, seconds), size


def baseline_import(lines_file: Path, target: Path) -> float:
    started = time.perf_counter()
    count = 0
    with closing(sqlite3.connect(target, isolation_level=None)) as conn:
        conn.execute("CREATE TABLE bare (event_id TEXT, received_at TEXT, body BLOB)")
        conn.execute("BEGIN")
        batch: list[tuple[object, ...]] = []
        with open(lines_file, "rb") as source:
            for line in source:
                fields = orjson.loads(line)
                batch.append((fields["event_id"], fields["received_at"], line))
                if len(batch) == 5000:
                    conn.executemany("INSERT INTO bare VALUES (?, ?, ?)", batch)
                    count += len(batch)
                    batch = []
        conn.executemany("INSERT INTO bare VALUES (?, ?, ?)", batch)
        count += len(batch)
        conn.execute("COMMIT")
    return rate(count, time.perf_counter() - started)


def _timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def _transfer_round(section: Section, log: Path, folder: Path, round_: int) -> None:
    """Export, import and the feed of one round, each next to its baseline."""
    plain, imported = folder / "export.ndjson", folder / "imported.db"
    remove_store(imported)
    events = log_position_of(log)
    first_bare = round_ % 2 == 0
    if first_bare:
        select = baseline_select(log)
    exported = _timed(lambda: export_log(log, plain))
    if not first_bare:
        select = baseline_select(log)
    _add(section, "export", "export (NDJSON, 1M-event log)", rate(events, exported), select)
    bare = baseline_import(plain, folder / "bare.db")
    (folder / "bare.db").unlink()
    imported_s = _timed(lambda: import_file(imported, plain))
    _add(section, "import", "import (into a new store)", rate(events, imported_s), bare)
    plain.unlink()
    with feed_server(imported) as url:
        feed(url, min(events, 20_000))  # warm up
        served, size = feed(url, events)
    _add(section, "feed", "feed: GET /events, one reader", served, select)
    section.figure("feed.bytes_per_event", "feed: bytes per event served", "bytes").add(
        size / events
    )
    remove_store(imported)


def _add(section: Section, key: str, label: str, value: float, baseline: float) -> None:
    section.figure(f"{key}.events_per_s", f"{label}: events per second", "/s").add(value)
    section.figure(f"{key}.baseline_per_s", f"{key} baseline: events per second", "/s").add(
        baseline
    )
    section.figure(f"{key}.ratio", f"{key} ÷ its baseline", "x").add(ratio(value, baseline))


def _gzip(section: Section, log: Path, folder: Path) -> None:
    """``export --after`` of the last :data:`GZIP_EVENTS` events to a ``.gz`` file."""
    zipped = folder / "tail.ndjson.gz"
    after = max(0, log_position_of(log) - GZIP_EVENTS)
    seconds = _timed(lambda: export_log(log, zipped, after=after))
    label = f"export (NDJSON, gzip), last {GZIP_EVENTS:,} events: events per second"
    section.figure("export.gzip_per_s", label, "/s").add(rate(GZIP_EVENTS, seconds))
    zipped.unlink()


def _ingest_with_readers(section: Section, profile: Profile, work: Path) -> None:
    """Ingest without and with :data:`FEED_READERS` feed readers, alternating, same token."""
    plan = Plan(profile, work, ensure_pool(work), new_secret(), feed_token=TOKEN)
    for round_ in range(profile.runs):
        stored: dict[int, float] = {}
        for readers in (0, FEED_READERS)[:: 1 if round_ % 2 == 0 else -1]:
            plan.feed_readers = readers
            print(f"  consumers: ingest with {readers} feed readers", file=sys.stderr)
            summary = run_one(plan, OURS, round_, tag=f"readers{readers}-{round_}")
            if "error" in summary:
                section.notes.append(f"ingest with {readers} feed readers: {summary['error']}")
                continue
            stored[readers] = summary["stored_per_s"]
            _size(plan, summary)
            if readers:
                _record_readers(section, summary)
        if len(stored) == 2:
            section.figure("ingest.without_readers", "ingest without feed readers: stored/s",
                           "/s").add(stored[0])  # fmt: skip
            section.figure("ingest.with_readers", f"ingest with {FEED_READERS} feed readers: "
                           "stored/s", "/s").add(stored[FEED_READERS])  # fmt: skip
            section.figure("ingest.readers_ratio", "ingest with ÷ without feed readers", "x").add(
                ratio(stored[FEED_READERS], stored[0])
            )


def _size(plan: Plan, summary: dict[str, object]) -> None:
    """Offer enough unique events for a full run: 1.5x the most stored per second so far."""
    per_s = summary.get("stored_per_s")
    if isinstance(per_s, float):
        wanted = int(per_s * plan.profile.ingest_seconds * 1.5)
        plan.ours_events = max(plan.ours_events if plan.ours_sized else 0, wanted, 20_000)
        plan.ours_sized = True


def _record_readers(section: Section, summary: dict[str, object]) -> None:
    reads = summary.get("feed")
    if not isinstance(reads, dict):
        return
    seconds = float(summary["seconds"])  # type: ignore[arg-type]
    section.figure("ingest.readers_requests_per_s", "feed readers: requests per second",
                   "/s").add(reads["requests"] / seconds)  # fmt: skip
    section.figure("ingest.readers_events_per_s", "feed readers: events read per second (all)",
                   "/s").add(reads["events"] / seconds)  # fmt: skip
    if reads["failures"]:
        section.notes.append(f"feed readers: {reads['failures']} failed requests")


def run_consumers(profile: Profile, work: Path) -> Section:
    section = Section("Consumers")
    log = ensure_log(work, profile.log_events)
    folder = work / "consumers"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.monotonic()
    try:
        for round_ in range(profile.runs):
            if not another_round_fits(time.monotonic() - started, round_,
                                      profile.transfer_budget_s):  # fmt: skip
                section.notes.append(
                    f"export, import and feed: {round_} of {profile.runs} rounds (time budget)"
                )
                break
            print(f"  consumers: round {round_ + 1}/{profile.runs}", file=sys.stderr)
            _transfer_round(section, log, folder, round_)
        _gzip(section, log, folder)
        _ingest_with_readers(section, profile, work)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    section.notes.append(
        "export and import each run over the whole cached log; the feed walks the store the "
        "import made (the same events), from a server with no projector; baselines: a bare "
        "SELECT of every column (export, feed), the lines parsed and inserted into a bare "
        "table (import). Ingest with feed readers: the readers long-poll from position 0 "
        f"with limit {1000} and wait 5 s in the load generator's process."
    )
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=QUICK.log_events)
    parser.add_argument("--runs", type=int, default=QUICK.runs)
    parser.add_argument("--work", type=Path, default=Path(__file__).parent / "work")
    args = parser.parse_args()
    profile = dataclasses.replace(QUICK, log_events=args.events, runs=args.runs)
    section = run_consumers(profile, args.work)
    for figure in section.figures.values():
        runs = ", ".join(f"{value:,.2f}" for value in figure.runs)
        print(f"{figure.label}: {figure.median:,.2f} {figure.unit} ({runs})")
    for note in section.notes:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
