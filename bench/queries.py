"""How fast the auditor's pages answer on a large store: every history and as-of canned query,
the timeline's search, and the pictures, as HTML pages through Datasette with clerk-audit's
plugins (in-process, so no network in the figure), on the projections of the 1M-event log.

    python -m bench.queries --db bench/work/copy-of-log.db [--runs 5]

Build the projections first with ``clerk-audit rebuild --db <a copy of the log>`` (about
100 s; never write the cached log itself). The parameters are picked from the store: the user
and the organization with the most timeline rows (the slowest pages), a session, an IP, a
role and a moment in the middle of the log. Prints one Markdown table (median and slowest of
``--runs`` after one warm-up, and the answer's size) against the targets: 200 ms per page,
500 ms for the search; the whole exports have none.
Results and their analysis go in ``bench/analysis.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from eventstore.engine import sqlite3
from eventstore.paths import default_projections_path

PAGE_MS, SEARCH_MS, PICTURES_MS, EXPORT_MS = 200.0, 500.0, 1000.0, 10_000.0


def _one(conn: sqlite3.Connection, sql: str) -> Any:
    row = conn.execute(sql).fetchone()
    return row[0] if row else None


def parameters(projections: Path) -> dict[str, str]:
    """Sample values from the store (read-only)."""
    with closing(sqlite3.connect(f"{projections.resolve().as_uri()}?mode=ro", uri=True)) as c:
        return {
            "user": _one(c, "SELECT user_id FROM audit_timeline WHERE user_id IS NOT NULL "
                            "GROUP BY user_id ORDER BY count(*) DESC LIMIT 1"),
            "org": _one(c, "SELECT organization_id FROM membership_roles "
                           "GROUP BY organization_id ORDER BY count(*) DESC LIMIT 1"),
            "session": _one(c, "SELECT id FROM sessions LIMIT 1 OFFSET 1000"),
            "ip": _one(c, "SELECT client_ip FROM audit_timeline WHERE client_ip IS NOT NULL "
                          "LIMIT 1 OFFSET 5000"),
            "email": _one(c, "SELECT primary_email_address FROM users "
                             "WHERE primary_email_address IS NOT NULL LIMIT 1 OFFSET 100"),
            "role": _one(c, "SELECT role FROM membership_roles LIMIT 1"),
            "at": _one(c, "SELECT occurred_at FROM audit_timeline ORDER BY occurred_at "
                          "LIMIT 1 OFFSET (SELECT count(*) / 2 FROM audit_timeline)"),
        }  # fmt: skip


def pages(p: dict[str, str]) -> dict[str, tuple[str, float]]:
    """``{name: (path, target ms)}``."""
    none = {"from": "", "to": ""}
    export = "/-/clerk-audit/export/audit/"

    def q(name: str, **params: str) -> tuple[str, float]:
        return f"/audit/{name}?{urlencode(params)}", PAGE_MS

    return {
        "user_history": q("user_history", user_id=p["user"], **none),
        "organization_history": q("organization_history", organization_id=p["org"], **none),
        "membership_changes": q("membership_changes", organization_id=p["org"], **none),
        "object_history": q("object_history", object_id=p["session"], **none),
        "sessions_for_user": q("sessions_for_user", user_id=p["user"], **none),
        "sign_ins_for_user": q("sign_ins_for_user", user_id=p["user"], **none),
        "sign_ins_from_ip": q("sign_ins_from_ip", client_ip=p["ip"], **none),
        "user_changes": q("user_changes", user_id=p["user"], **none),
        "object_changes": q("object_changes", object_id=p["org"], **none),
        "organization_members_as_of": q(
            "organization_members_as_of", organization_id=p["org"], at=p["at"]
        ),
        "who_had_role": q("who_had_role", role=p["role"], at=p["at"]),
        "user page": (f"/audit/users/{p['user']}", PAGE_MS),
        "timeline search by email": (
            f"/audit/audit_timeline?{urlencode({'_search': p['email']})}",
            SEARCH_MS,
        ),
        "timeline search by IP": (
            f"/audit/audit_timeline?{urlencode({'_search': p['ip']})}",
            SEARCH_MS,
        ),
        "sign_ins_from_ip, 10th page (rows 901-1,000)": q(
            "sign_ins_from_ip", client_ip=p["ip"], _next="900", **none
        ),
        "roles over time": (f"/-/clerk-audit/roles/{p['org']}", PAGE_MS),
        "pictures (whole log, no target)": ("/-/clerk-audit/charts", PICTURES_MS),
        "export user_history CSV (every row, no target)": (
            export + f"user_history.csv?{urlencode({'user_id': p['user'], **none})}",
            EXPORT_MS,
        ),
        "export timeline by IP JSON (every row, no target)": (
            export + f"audit_timeline.json?{urlencode({'client_ip': p['ip']})}",
            EXPORT_MS,
        ),
    }


async def measure(db: Path, runs: int) -> list[tuple[str, float, float, float, int, int]]:
    """``(name, median ms, slowest ms, target ms, status, bytes)`` per page."""
    from datasette.app import Datasette

    from eventstore.cli.datasette import SETTINGS, load_allowed_plugins, load_metadata
    from eventstore.datasette_files import StoreFiles, registered

    load_allowed_plugins()
    projections = default_projections_path(db)
    found = parameters(projections)
    results = []
    with registered(StoreFiles(db, projections)):
        ds = Datasette([], metadata=load_metadata(), settings=SETTINGS)
        await ds.invoke_startup()
        for name, (path, target) in pages(found).items():
            warm = await ds.client.get(path, follow_redirects=True)  # warm-up
            status, size = warm.status_code, len(warm.content)
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                await ds.client.get(path, follow_redirects=True)
                times.append((time.perf_counter() - started) * 1000)
            results.append((name, statistics.median(times), max(times), target, status, size))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.queries", description=__doc__)
    parser.add_argument("--db", type=Path, required=True, help="a copy of the log, rebuilt")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results = asyncio.run(measure(args.db, args.runs))
    print("| page | median ms | slowest ms | target ms | KB | status |")
    print("|---|---:|---:|---:|---:|---|")
    for name, median, slowest, target, status, size in results:
        verdict = "ok" if slowest < target and status == 200 else "MISS"
        print(
            f"| {name} | {median:.0f} | {slowest:.0f} | {target:.0f} | {size / 1024:,.0f} "
            f"| {status} {verdict} |"
        )


if __name__ == "__main__":
    main()
