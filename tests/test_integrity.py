"""The log's hash chain, ``verify`` and checkpoints: a hostile editor with plain ``sqlite3``
(triggers dropped first) is caught, and named by position; a truncated log is caught against a
checkpoint taken before; a forged checkpoint is refused."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from sqlite_utils import Database

from eventstore.chain import GENESIS, Break, ChainReport, links
from eventstore.chain_check import combine, spans
from eventstore.checkpointer import Checkpointer, CheckpointPolicy
from eventstore.db import open_store, transaction
from eventstore.engine import sqlite3
from eventstore.schema import APPLICATION_ID, log_migrations
from eventstore.writer import AppendJob, append_jobs
from tests.support.direct import RECEIVED
from tests.support.ingest import user_created
from tests.support.server import running_server

CLI = Path(sys.executable).with_name("clerk-audit")
EVENTS = 12


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=120, env=env)


def _log(path: Path, count: int = EVENTS, first: int = 1) -> None:
    jobs = [
        AppendJob(f"msg_{n:04d}", 1, RECEIVED, user_created()) for n in range(first, first + count)
    ]
    with closing(open_store(path, create=True)) as conn, transaction(conn):
        append_jobs(conn, jobs)


def _edit(path: Path, *statements: str) -> None:
    """What a hostile editor does: plain sqlite3, the append-only triggers dropped first."""
    with closing(sqlite3.connect(path)) as conn:
        triggers = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall()
        for (name,) in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        for statement in statements:
            conn.execute(statement)
        conn.commit()


def _verify(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _cli("verify", "--db", str(path), *extra)


@pytest.mark.parametrize("workers", ["1", "2", "20"])
def test_an_intact_log_verifies(db_path: Path, workers: str) -> None:
    _log(db_path)
    done = _verify(db_path, "--workers", workers)
    assert done.returncode == 0, done.stderr
    assert f"verified {EVENTS} events: the chain is intact up to position {EVENTS}" in done.stdout


EDITS: dict[str, tuple[list[str], int, str]] = {
    "one byte of a body": (
        ["UPDATE events SET body = CAST(replace(CAST(body AS TEXT), 'user_', 'usex_') AS BLOB) "
         "WHERE position = 5"],
        5, "body does not match its body_sha256",
    ),
    "a body_sha256": (
        ["UPDATE events SET body_sha256 = replace(body_sha256, substr(body_sha256, 1, 1), "
         "CASE substr(body_sha256, 1, 1) WHEN 'a' THEN 'b' ELSE 'a' END) WHERE position = 7"],
        7, "body does not match",
    ),
    "a body and its body_sha256": (
        ["UPDATE events SET body = CAST('{}' AS BLOB), body_sha256 = "
         "'44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a' WHERE position = 6"],
        6, "chain value does not follow",
    ),
    "a chain value that is not hex": (
        ["UPDATE events SET chain = 'zz' || substr(chain, 3) WHERE position = 4"],
        4, "chain value does not follow",
    ),
    "a chain value in capitals": (
        ["UPDATE events SET chain = upper(chain) WHERE position = 8"],
        8, "chain value does not follow",
    ),
    "a deleted row": (["DELETE FROM events WHERE position = 4"], 4, "events are missing"),
    "two rows' positions swapped": (
        ["UPDATE events SET position = -3 WHERE position = 3",
         "UPDATE events SET position = 3 WHERE position = 8",
         "UPDATE events SET position = 8 WHERE position = -3"],
        3, "chain value does not follow",
    ),
    "a forged row in the middle": (
        ["UPDATE events SET position = position + 100 WHERE position > 9",
         "UPDATE events SET position = position - 99 WHERE position > 100",
         "INSERT INTO events (position, event_id, event_type, received_at, svix_timestamp, body, "
         "body_sha256, status, chain) SELECT 10, 'msg_forged', event_type, received_at, 1, body, "
         "body_sha256, status, chain FROM events WHERE position = 9"],
        10, "chain value does not follow",
    ),
}  # fmt: skip


@pytest.mark.parametrize("workers", ["1", "3"])
@pytest.mark.parametrize("edit", list(EDITS))
def test_a_hostile_edit_is_named_by_position(db_path: Path, edit: str, workers: str) -> None:
    """With 3 workers the 12 events are checked as 1-4, 5-8 and 9-12 side by side, so the
    edits at 4 and 5 fall on a range's edge."""
    statements, position, problem = EDITS[edit]
    _log(db_path)
    _edit(db_path, *statements)
    done = _verify(db_path, "--workers", workers)
    assert done.returncode == 1, done.stdout
    assert f"chain broken at position {position}:" in done.stderr
    assert problem in done.stderr


def test_a_truncated_log_is_caught_against_a_checkpoint_taken_before(
    db_path: Path, tmp_path: Path
) -> None:
    _log(db_path)
    saved = tmp_path / "checkpoint.json"
    assert _cli("checkpoint", "--db", str(db_path), "--out", str(saved)).returncode == 0
    assert json.loads(saved.read_text())["position"] == EVENTS
    _log(db_path, 3, first=EVENTS + 1)
    assert _verify(db_path, "--against", str(saved)).returncode == 0
    _edit(db_path, f"DELETE FROM events WHERE position > {EVENTS - 2}")
    assert _verify(db_path).returncode == 0, "a chain alone cannot see a truncated tail"
    done = _verify(db_path, "--against", str(saved))
    assert done.returncode == 1
    assert f"ends at position {EVENTS - 2}, before the checkpoint's {EVENTS}" in done.stderr


def test_a_log_rewritten_after_a_checkpoint_position_is_caught(
    db_path: Path, tmp_path: Path
) -> None:
    """The editor rewrites event 5 and recomputes every link after it: the chain verifies, but
    the log no longer extends the checkpoint."""
    _log(db_path)
    saved = tmp_path / "checkpoint.json"
    _cli("checkpoint", "--db", str(db_path), "--out", str(saved))
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute("SELECT position, event_id, body_sha256 FROM events").fetchall()
        (previous,) = conn.execute("SELECT chain FROM events WHERE position = 4").fetchone()
    forged = "0" * 64
    rows[4] = (5, rows[4][1], forged)
    relinked = links(bytes.fromhex(previous), rows[4:])
    _edit(db_path, f"UPDATE events SET body_sha256 = '{forged}', body = body WHERE position = 5",
          *(f"UPDATE events SET chain = '{v.hex()}' WHERE position = {r[0]}"
            for v, r in zip(relinked, rows[4:], strict=True)))  # fmt: skip
    assert "body does not match" in _verify(db_path).stderr
    assert _verify(db_path, "--against", str(saved)).returncode == 1


def _signing_env(folder: Path) -> tuple[Path, dict[str, str]]:
    folder.mkdir(exist_ok=True)
    key = folder / "signing.pem"
    made = _cli("checkpoint", "--new-key", str(key))
    assert made.returncode == 0, made.stderr
    assert (key.stat().st_mode & 0o777) == 0o600
    return key, {**os.environ, "CLERK_AUDIT_SIGNING_KEY": str(key)}


def test_a_signed_checkpoint_verifies_and_a_forged_one_is_refused(
    db_path: Path, tmp_path: Path
) -> None:
    _log(db_path)
    _, env = _signing_env(tmp_path)
    saved = tmp_path / "checkpoint.json"
    assert _cli("checkpoint", "--db", str(db_path), "--out", str(saved), env=env).returncode == 0
    checkpoint = json.loads(saved.read_text())
    assert checkpoint["signature"] and checkpoint["public_key"]
    done = _cli("verify", "--db", str(db_path), "--against", str(saved), env=env)
    assert done.returncode == 0 and "signature valid for the trusted key" in done.stdout
    forgeries: list[Callable[[dict[str, object]], None]] = [
        lambda c: c.update(position=3),
        lambda c: c.update(signature=str(c["signature"])[:-4] + "AAA="),
    ]
    for forge in forgeries:
        forged = dict(checkpoint)
        forge(forged)
        saved.write_text(json.dumps(forged))
        refused = _cli("verify", "--db", str(db_path), "--against", str(saved), env=env)
        assert refused.returncode == 1 and "signature does not verify" in refused.stderr


def test_a_checkpoint_signed_by_another_key_is_refused(db_path: Path, tmp_path: Path) -> None:
    _log(db_path)
    _, env = _signing_env(tmp_path / "ours")
    other, other_env = _signing_env(tmp_path / "theirs")
    saved = tmp_path / "checkpoint.json"
    _cli("checkpoint", "--db", str(db_path), "--out", str(saved), env=other_env)
    refused = _cli("verify", "--db", str(db_path), "--against", str(saved), env=env)
    assert refused.returncode == 1 and "signature does not verify" in refused.stderr
    assert other.exists()


def test_a_log_from_before_the_chain_is_chained_when_opened(db_path: Path) -> None:
    with closing(sqlite3.connect(db_path)) as conn:
        log_migrations.apply(Database(conn), stop_before="m005_hash_chain")
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        for n in range(1, 6):
            body = user_created()
            conn.execute(
                "INSERT INTO events (position, event_id, event_type, received_at, svix_timestamp, "
                "body, body_sha256, status) VALUES (?, ?, 'user.created', ?, 1, ?, ?, 'ok')",
                (n, f"msg_{n}", RECEIVED, body, hashlib.sha256(body).hexdigest()),
            )
        conn.commit()
    open_store(db_path).close()
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute("SELECT position, event_id, body_sha256, chain FROM events").fetchall()
    expected = links(GENESIS, [row[:3] for row in rows])
    assert [row[3] for row in rows] == [value.hex() for value in expected]
    assert _verify(db_path).returncode == 0
    _log(db_path, 2, first=10)
    assert _verify(db_path).returncode == 0


def test_checkpoints_and_verifies_are_recorded_for_the_auditor(
    db_path: Path, tmp_path: Path
) -> None:
    _log(db_path)
    _cli("checkpoint", "--db", str(db_path), "--out", str(tmp_path / "cp.json"))
    assert _verify(db_path).returncode == 0
    _edit(db_path, "UPDATE events SET body = CAST('{}' AS BLOB) WHERE position = 9")
    assert _verify(db_path).returncode == 1
    with closing(sqlite3.connect(db_path)) as conn:
        rows = conn.execute(
            "SELECT kind, position, ok, chain IS NOT NULL FROM integrity_checks ORDER BY id"
        ).fetchall()
    assert rows == [("checkpoint", EVENTS, 1, 1), ("verify", EVENTS, 1, 1), ("verify", 9, 0, 0)]


def test_the_server_side_checkpointer_writes_when_the_log_grew_enough(
    db_path: Path, tmp_path: Path
) -> None:
    _log(db_path, 3)
    key, _ = _signing_env(tmp_path / "key")
    policy = CheckpointPolicy(tmp_path / "checkpoints", every_events=5, key_file=key)
    writer = Checkpointer(db_path, policy)
    policy.folder.mkdir()
    assert writer.maybe_write() is None, "3 events are fewer than 5"
    _log(db_path, 2, first=4)
    written = writer.maybe_write()
    assert written is not None and written.name == "checkpoint-000000000005.json"
    assert writer.maybe_write() is None, "nothing new since"
    done = _cli("verify", "--db", str(db_path), "--against", str(written), "--public-key",
                f"{key}.pub")  # fmt: skip
    assert done.returncode == 0 and "trusted key" in done.stdout, done.stderr


def test_serve_writes_checkpoints_into_its_folder_and_a_last_one_when_it_stops(
    db_path: Path, tmp_path: Path, secret: str
) -> None:
    folder = tmp_path / "checkpoints"
    env = {"CLERK_AUDIT_CHECKPOINT_DIR": str(folder), "CLERK_AUDIT_CHECKPOINT_EVERY": "1000"}
    with running_server(db_path, secret, env=env) as server:
        for n in range(3):
            assert server.post(f"msg_{n}", user_created()).status_code == 200
    (written,) = folder.iterdir()
    assert written.name == "checkpoint-000000000003.json"
    done = _verify(db_path, "--against", str(written))
    assert done.returncode == 0 and "extends the checkpoint at position 3" in done.stdout


@pytest.mark.parametrize(("head", "workers"), [(1, 1), (1, 4), (12, 3), (13, 3), (10, 20)])
def test_spans_cover_the_log_once_in_order(head: int, workers: int) -> None:
    parts = spans(head, workers)
    covered = [p for span in parts for p in range(span.first, span.last + 1)]
    assert covered == list(range(1, head + 1))
    assert len(parts) <= workers


def test_the_first_broken_range_names_the_break_and_counts_what_was_read() -> None:
    intact = ChainReport(4, 4, "aa", None)
    broken = ChainReport(2, 6, "bb", Break(7, "the body does not match its body_sha256"))
    later = ChainReport(0, 8, "", Break(8, "no chain value"))
    assert combine([intact, broken, later]) == ChainReport(6, 6, "bb", broken.broken)
    assert combine([intact, ChainReport(4, 8, "cc", None)]) == ChainReport(8, 8, "cc", None)
