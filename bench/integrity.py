"""Issue 14's figures: ``verify`` on the 1M-event log against a bare SHA-256 pass over the same
bodies (alternating, same run), the chain's cost per appended event, and the redaction of a
user with 1,000 events on a copy of the 1M-event log."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from bench.genlog import ensure_log, log_position_of
from bench.profile import Profile
from bench.stats import Section, ratio
from eventstore.chain import GENESIS, link
from eventstore.chain_check import verify_log
from eventstore.db import open_reader, open_store, transaction
from eventstore.engine import sqlite3
from eventstore.paths import default_projections_path
from eventstore.writer import AppendJob, append_jobs
from projections.files import generation_path
from projections.tables import checkpoint

REDACTED_EVENTS = 1_000
USER = "user_bench_redacted_000000"
CLI = Path(sys.executable).with_name("clerk-audit")


def _bare_sha256(log: Path) -> float:
    """Seconds to read every body and hash it, nothing else."""
    started = time.perf_counter()
    with closing(open_reader(log)) as conn:
        cursor = conn.execute("SELECT body FROM events ORDER BY position")
        while rows := cursor.fetchmany(2_000):
            for (body,) in rows:
                hashlib.sha256(body).digest()
    return time.perf_counter() - started


def _verify(log: Path) -> tuple[float, int]:
    started = time.perf_counter()
    report = verify_log(log)
    if report.broken is not None:
        raise RuntimeError(f"the bench log does not verify: {report.broken}")
    return time.perf_counter() - started, report.events


def _link_us(count: int = 200_000) -> float:
    """CPU microseconds per event for the chain value the writer computes on append."""
    digest = hashlib.sha256(b"x").hexdigest()
    started, previous = time.process_time(), GENESIS
    for position in range(1, count + 1):
        previous = link(previous, position, "msg_2x0123456789abcdefghijklmno", digest)
    return (time.process_time() - started) / count * 1e6


def _user_body(n: int) -> bytes:
    updated = 1_786_000_000_000 + n
    return (
        b'{"object":"event","type":"user.updated","timestamp":%d,"data":{"id":"%s",'
        b'"first_name":"Redact","last_name":"Me","email_addresses":[{"id":"idn_%d",'
        b'"email_address":"redact.me@example.com"}],"created_at":1786000000000,'
        b'"updated_at":%d},"event_attributes":{"http_request":{"client_ip":"198.51.100.7",'
        b'"user_agent":"bench"}}}' % (updated, USER.encode(), n, updated)
    )


def _copy_projections(log: Path, copy: Path) -> bool:
    """Give ``copy`` (a copy of ``log``) a copy of ``log``'s projections, when they are complete,
    so that projecting the events appended to the copy takes seconds rather than a rebuild's
    minutes; False (nothing copied) when ``log`` has none or they are behind."""
    source = default_projections_path(log).resolve()
    if not source.is_file():
        return False
    with closing(sqlite3.connect(source, isolation_level=None)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the copy is then the main file alone
        if checkpoint(conn) != log_position_of(log):
            return False
    link = default_projections_path(copy)
    shutil.copyfile(source, generation_path(link, 1))
    os.symlink(generation_path(link, 1).name, link)
    return True


def _redaction_s(log: Path, work: Path) -> float:
    """Seconds for ``clerk-audit redact`` of a user with 1,000 events, on a copy of ``log``
    (projected first, as a running server's projector would have: the cached projections
    copied along, and the appended events projected onto them)."""
    copy = work / "redaction" / "audit.db"
    shutil.rmtree(copy.parent, ignore_errors=True)
    copy.parent.mkdir(parents=True)
    shutil.copyfile(log, copy)
    jobs = [AppendJob(f"msg_redact_{n:05d}", 1, "2026-12-01T00:00:00.000Z", _user_body(n))
            for n in range(REDACTED_EVENTS)]  # fmt: skip
    with closing(open_store(copy)) as conn, transaction(conn):
        append_jobs(conn, jobs)
    projected = _copy_projections(log, copy)
    command = "project" if projected else "rebuild"
    subprocess.run([str(CLI), command, "--db", str(copy)], check=True, capture_output=True)
    os.sync()  # the copy's and the rebuild's gigabytes, else the redaction's fsyncs wait for them
    done = subprocess.run(
        [str(CLI), "redact", "--user", USER, "--reason", "bench", "--db", str(copy)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    shutil.rmtree(copy.parent, ignore_errors=True)
    found = re.search(rf"redacted {REDACTED_EVENTS} events .*\(([\d.]+) s\)", done.stdout)
    if found is None:
        raise RuntimeError(f"redact did not redact {REDACTED_EVENTS} events: {done.stdout}")
    return float(found.group(1))


def run_integrity(profile: Profile, work: Path) -> Section:
    section = Section("Integrity")
    log = ensure_log(work, profile.log_events)
    for round_ in range(2):
        order = ["bare", "verify"][:: 1 if round_ % 2 == 0 else -1]
        seconds: dict[str, float] = {}
        for name in order:
            if name == "bare":
                seconds[name] = _bare_sha256(log)
            else:
                seconds[name], events = _verify(log)
        section.figure("verify.events_per_s", "verify: events per second", "/s").add(
            events / seconds["verify"]
        )
        section.figure("verify.ratio", "verify ÷ bare SHA-256 pass (speed)", "x").add(
            ratio(seconds["bare"], seconds["verify"])
        )
    section.figure("chain.link_us", "chain value per appended event (CPU)", "µs").add(_link_us())
    section.figure("redact.seconds", "redact a user with 1,000 events (1M log)", "s").add(
        _redaction_s(log, work)
    )
    section.notes.append(
        "verify and the bare pass read the same bodies from the same file, alternating; the "
        "redaction runs `clerk-audit redact` as a process on a copy of the 1M-event log with "
        "1,000 events of one user appended and projected first, and the files synced to disk (else "
        "its first fsync waits for gigabytes of the copy); its time is the one the "
        "command reports (the redaction, without the interpreter's start-up)."
    )
    return section
