"""The log's contract on both backends (CONTRACT §8, §10): the same store on SQLite and on
PostgreSQL projects exactly once, rebuilds to the same state, verifies, catches an edit made
around the database's own refusals, and redacts one user with ``verify`` still passing. The
commands run as an operator runs them, ``--db`` a path or a ``postgresql://`` URL."""

from __future__ import annotations

import json
import re
import subprocess
from contextlib import closing
from pathlib import Path

import psycopg
import pytest

from eventstore.backends import log_transaction, open_log
from eventstore.location import LogLocation, PostgresLog, location_text
from eventstore.writer import AppendJob, append_jobs
from projections.rebuild import rebuild
from tests.support.direct import RECEIVED
from tests.support.server import running_server
from tests.support.store import query
from tests.test_redaction import CLI, MAYA, MAYA_IP, PERSONAL, RELAY, TOMAS, _events


@pytest.fixture(params=["sqlite", "postgresql"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> LogLocation:
    """An empty log of each kind."""
    if request.param == "sqlite":
        return tmp_path / "audit.db"
    location: PostgresLog = request.getfixturevalue("pg_log")
    return location


def _db(log: LogLocation) -> str:
    return location_text(log)


def _cli(log: LogLocation, projections: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [str(CLI), *args[:1], "--db", _db(log), *args[1:]]
    if args[0] in ("project", "redact", "rebuild", "state"):
        command += ["--projections-db", str(projections)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _append(log: LogLocation, events: list[tuple[str, bytes]]) -> None:
    """Append as the server's writer does: one group, one transaction."""
    jobs = [AppendJob(event_id, 1, RECEIVED, body, RELAY, "Svix-Webhooks/1.0")
            for event_id, body in events]  # fmt: skip
    with closing(open_log(log)) as conn, log_transaction(conn, log):
        append_jobs(conn, jobs)


def _bodies(log: LogLocation) -> bytes:
    return b"".join(row["body"] for row in query(log, "SELECT body FROM events"))


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_store_projects_once_rebuilds_verifies_and_redacts_alike(
    log: LogLocation, tmp_path: Path
) -> None:
    projections = tmp_path / "audit.projections.db"
    events = _events()
    _append(log, events[:8])
    assert "up to position 8" in _ok(_cli(log, projections, "project"))  # built, then followed
    _append(log, events[8:])
    assert "projected 7 events up to position 15" in _ok(_cli(log, projections, "project"))
    assert "projected 0 events" in _ok(_cli(log, projections, "project"))  # exactly once
    assert "verified 15 events" in _ok(_cli(log, projections, "verify"))
    live = rebuild(log, tmp_path / "again.projections.db").digest
    assert f"state digest {live}" in _ok(_cli(log, projections, "rebuild", "--check"))

    assert all(needle.encode() in _bodies(log) for needle in PERSONAL)
    assert "redacted 12 events" in _ok(_cli(log, projections, "redact", "--user", MAYA,
                                            "--reason", "GDPR request 7"))  # fmt: skip
    assert [n for n in PERSONAL if n.encode() in _bodies(log)] == []
    assert TOMAS.encode() in _bodies(log)
    maya = query(log, "SELECT remote_addr FROM deliveries WHERE event_id LIKE 'msg_maya_%'")
    assert {row["remote_addr"] for row in maya} == {"[redacted]"} and MAYA_IP != RELAY
    done = _ok(_cli(log, projections, "verify"))
    assert "12 events redacted by 1 recorded redactions" in done
    again = _ok(_cli(log, projections, "redact", "--user", MAYA, "--reason", "again"))
    assert "nothing to redact" in again
    assert rebuild(log, tmp_path / "after.projections.db").digest != live


def _edit_around_the_refusals(log: LogLocation, position: int) -> None:
    """What an attacker with the database's own rights could do: step around the
    append-only triggers and change a body."""
    if isinstance(log, PostgresLog):
        with psycopg.connect(log.url, autocommit=True) as conn:
            conn.execute(b"ALTER TABLE events DISABLE TRIGGER USER")
            conn.execute(b"UPDATE events SET body = 'x'::bytea WHERE position = %s", (position,))
            conn.execute(b"ALTER TABLE events ENABLE TRIGGER USER")
        return
    from eventstore.engine import sqlite3

    with closing(sqlite3.connect(log)) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("UPDATE events SET body = x'78' WHERE position = ?", (position,))
        conn.commit()


def test_an_edit_around_the_database_is_named_by_position(log: LogLocation, tmp_path: Path) -> None:
    _append(log, _events())
    _edit_around_the_refusals(log, 5)
    done = _cli(log, tmp_path / "p.db", "verify")
    assert done.returncode == 1
    assert "chain broken at position 5: the body does not match its body_sha256" in done.stderr
    (check,) = query(log, "SELECT ok, position FROM integrity_checks")
    assert (check["ok"], check["position"]) == (0, 5)


def test_state_as_of_now_is_the_projected_row_on_either_log(
    log: LogLocation, tmp_path: Path
) -> None:
    """``state --as-of`` reads the bodies from either log: as of a time after every event,
    a user is their projected row."""
    _append(log, _events())
    projections = tmp_path / "p.db"
    _ok(_cli(log, projections, "project"))
    done = _cli(log, projections, "state", "--as-of", "2100-01-01", "--user", MAYA)
    _ok(done)
    state = json.loads(done.stdout)
    (row,) = query(projections, "SELECT * FROM users WHERE id = ?", (MAYA,))
    assert state["user"] == {k: v for k, v in row.items() if k in state["user"]}
    assert set(row) - set(state["user"]) == {"data", "version_ms", "version_rank"}
    assert [m["organization_id"] for m in state["memberships"]], state


def test_a_command_that_reads_the_sqlite_file_itself_refuses_a_url(pg_log: PostgresLog) -> None:
    """``datasette`` (Datasette serves SQLite files) says so in one line, not a traceback,
    and never prints the URL's password."""
    with_password = pg_log.url.replace("postgres@", "postgres:hunter2@")
    done = subprocess.run([str(CLI), "datasette", "--db", with_password], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert "`clerk-audit datasette` works on a SQLite log only" in done.stderr
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


def _count(output: str, name: str) -> int:
    match = re.search(rf"^\s*{name}\s+(\d+)\b", output, re.MULTILINE)
    assert match, output
    return int(match.group(1))


def test_send_serve_checkpoints_stats_and_checkpoint_take_either_log(
    log: LogLocation, tmp_path: Path
) -> None:
    """``send --db`` finds the development secret ``serve`` made (beside the projections file
    for a PostgreSQL log), ``serve --checkpoint-dir`` writes its last checkpoint on stopping,
    and ``stats`` and ``checkpoint`` read the log, a path or a URL alike."""
    (tmp_path / "data").mkdir()
    folder = tmp_path / "checkpoints"
    env = {"CLERK_AUDIT_CHECKPOINT_DIR": str(folder), "CLERK_AUDIT_CHECKPOINT_EVERY": "1000"}

    def run(*args: str) -> str:
        done = subprocess.run([str(CLI), *args[:1], "--db", _db(log), *args[1:]], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        return _ok(done)

    with running_server(log, None, env=env, cwd=tmp_path) as server:
        sent = run("send", "--url", server.ingest_url, "user.created", "session.created")
        assert sent.count(": 200 ") == 2, sent
        server.wait_projected()
    (written,) = folder.iterdir()
    assert written.name == "checkpoint-000000000002.json"

    shown = run("stats")
    assert (_count(shown, "events"), _count(shown, "stored"), _count(shown, "users")) == (2, 2, 1)
    assert re.search(r"projected up to position +2 +\(lag 0 events\)", shown), shown
    taken = json.loads(run("checkpoint"))
    assert (taken["position"], taken["chain"]) == (2, json.loads(written.read_text())["chain"])
    assert "extends the checkpoint at position 2" in run("verify", "--against", str(written))
    kinds = [row["kind"] for row in query(log, "SELECT kind FROM integrity_checks ORDER BY id")]
    assert kinds == ["checkpoint", "checkpoint", "verify"]
