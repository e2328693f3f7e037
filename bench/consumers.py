"""``python -m bench.consumers``: the consumers' paths (issue 15) against a bare baseline.

On a generated log of ``--events`` events (the sample bodies of every Clerk type, 0.5 to
5 KB, with ids of their own), in one run:

* **baseline**: a plain ``SELECT`` of every column of the same rows (``fetchmany``);
* **feed**: one reader walking ``GET /events`` (``limit=10000``) from position 0 to the head,
  over HTTP from a real uvicorn server running the app (``eventstore.app``; no projector, so
  nothing else competes for the two cores); the reader takes each page's ``next`` and keeps
  the bytes, as a worker would before parsing them;
* **export**: ``clerk-audit export`` (``eventstore.transfer.export_log``) to a file, plain and
  gzip;
* **import**: ``import_file`` of that file into a new store; its baseline is the same lines
  parsed and inserted as they are into a table with no constraint, trigger or chain.

Each is given in events/s and as a ratio to its baseline. Usage::

    .venv/bin/python -m bench.consumers                 # 200,000 events
    .venv/bin/python -m bench.consumers --events 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import orjson

from eventstore.db import open_store, transaction
from eventstore.log import append_many, event_record
from eventstore.samples import sample_body, sample_names
from eventstore.transfer import export_log, import_file

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


def generate(path: Path, events: int) -> None:
    """A log of ``events`` events: the samples, each with ids of its own."""
    templates = [json.loads(sample_body(name)) for name in sample_names() if name.count(".") == 1]
    with closing(open_store(path, create=True, synchronous="OFF")) as conn:
        for start in range(0, events, 20_000):
            records = []
            for n in range(start, min(events, start + 20_000)):
                document = templates[n % len(templates)]
                data = document.get("data")
                if isinstance(data, dict):
                    data["id"] = f"obj_{n:012d}"
                body = orjson.dumps(document)
                received = "2026-08-04T12:00:00.000Z"
                records.append(event_record(event_id=f"msg_{n:020d}", svix_timestamp=1,
                                            received_at=received, body=body))  # fmt: skip
            with transaction(conn):
                append_many(conn, records)
            print(f"\rgenerated {min(events, start + 20_000)} events", end="", file=sys.stderr)
    print(file=sys.stderr)


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


def feed(url: str, head: int) -> tuple[float, int]:
    """Events/s and bytes read by one reader walking the whole log."""
    after, count, size = 0, 0, 0
    headers = {"authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        started = time.perf_counter()
        while after < head:
            page = client.get("/events", params={"after": after, "limit": 10_000}).content
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


def timed(events: int, run: object) -> float:
    started = time.perf_counter()
    run()  # type: ignore[operator]
    return rate(events, time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--work", type=Path, default=None, help="keep files here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.work) as folder:
        work = Path(folder)
        log = work / "log.db"
        generate(log, args.events)
        n = args.events
        results: dict[str, float] = {}
        results["baseline: SELECT every column"] = baseline_select(log)
        with feed_server(log) as url:
            feed(url, min(n, 20_000))  # warm up
            results["feed: GET /events, one reader"], size = feed(url, n)
        plain, zipped = work / "export.ndjson", work / "export.ndjson.gz"
        results["export (NDJSON)"] = timed(n, lambda: export_log(log, plain))
        results["export (NDJSON, gzip)"] = timed(n, lambda: export_log(log, zipped))
        results["baseline: parse lines + bare INSERT"] = baseline_import(plain, work / "bare.db")
        results["import"] = timed(n, lambda: import_file(work / "imported.db", plain))
        select = results["baseline: SELECT every column"]
        bare = results["baseline: parse lines + bare INSERT"]
        print(f"\n{n:,} events, {plain.stat().st_size / n:,.0f} bytes per exported line, "
              f"feed {size / n:,.0f} bytes per event\n")  # fmt: skip
        print("| path | events/s | vs baseline |\n|---|---:|---:|")
        for name, value in results.items():
            base = bare if name.startswith("import") else select
            ratio = "" if name.startswith("baseline") else f"{value / base:.2f}"
            print(f"| {name} | {value:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
