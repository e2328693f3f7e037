"""``clerk-audit redact`` (CONTRACT §8): one user's personal data leaves the log and the
projections, the redaction is recorded, ``verify`` keeps passing, and only a recorded
redaction can change a body.

The store holds Maya (the user redacted: her user events, sessions, a membership, an
invitation to her address, one she sent, an email, an SMS, a subscription, an organization she
created) and Tomas (another user, whose data must not change)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from eventstore.db import open_store, transaction
from eventstore.engine import sqlite3
from eventstore.log import RESERVED_REASON, append_many
from eventstore.paths import default_projections_path
from eventstore.redaction import redaction_record
from eventstore.samples import sample_body
from eventstore.writer import AppendJob, append_jobs
from projections.schema import SEARCH_SHARDS, search_shard, shard_of
from tests.support.direct import RECEIVED, connect, digest, misindexed, new_store, project

CLI = Path(sys.executable).with_name("clerk-audit")
MAYA = "user_3HSCezDl5JNycphIFtMXfMdwRie"
MAYA_EMAIL = "maya.okafor@example.com"
MAYA_PHONE = "+14155550142"
MAYA_IP = "203.0.113.24"
TOMAS = "user_2TomasLindqvist0000000000"
TOMAS_EMAIL = "tomas.lindqvist@example.org"
TOMAS_IP = "198.51.100.77"
RELAY = "192.0.2.50"
"""The address deliveries come from (Svix's, in real life)."""
PERSONAL = (MAYA_EMAIL, MAYA_PHONE, MAYA_IP, "Okafor", "Oakland", "482913", "731554")
"""What must be gone: Maya's address, number and IP, her name, city and one-time codes."""

MAYA_EVENTS = (
    "user.created", "user.updated", "session.created", "session.ended",
    "organizationMembership.created", "organizationInvitation.created", "email.created",
    "sms.created", "organization.created", "subscription.created", "paymentAttempt.created",
)  # fmt: skip


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=120)


def _with(name: str, edit: Callable[[dict[str, Any]], None] | None = None) -> bytes:
    document = json.loads(sample_body(name))
    if edit is not None:
        edit(document)
    return json.dumps(document, indent=2).encode()


def _as_tomas(name: str, suffix: str) -> bytes:
    """A sample event of Tomas's own (his ids, address, IP and name)."""
    text = sample_body(name).decode()
    for old, new in ((MAYA, TOMAS), (MAYA_EMAIL, TOMAS_EMAIL), (MAYA_PHONE, "+14155550199"),
                     (MAYA_IP, TOMAS_IP), ("Okafor-Reyes", "Lindqvist"), ("Okafor", "Lindqvist"),
                     ("Maya", "Tomas"), ("Oakland", "Uppsala")):  # fmt: skip
        text = text.replace(old, new)
    document = json.loads(text)
    if document["data"]["id"] != TOMAS:
        document["data"]["id"] += suffix
    return json.dumps(document, indent=2).encode()


def _invited_maya(document: dict[str, Any]) -> None:
    """An invitation from Tomas to Maya's address (before she signed up: no user_id)."""
    data = document["data"]
    data.update(id="orginv_toMaya", email_address=MAYA_EMAIL, inviter_id=TOMAS)
    data["public_inviter_data"].update(user_id=TOMAS, first_name="Tomas", last_name="Lindqvist",
                                       identifier=TOMAS_EMAIL)  # fmt: skip
    document["event_attributes"]["http_request"]["client_ip"] = TOMAS_IP


def _events() -> list[tuple[str, bytes]]:
    events = [(f"msg_maya_{n:02d}", _with(name)) for n, name in enumerate(MAYA_EVENTS)]
    events.append(("msg_maya_invited", _with("organizationInvitation.created", _invited_maya)))
    for n, name in enumerate(("user.created", "user.updated", "session.created")):
        events.append((f"msg_tomas_{n:02d}", _as_tomas(name, "Tomas")))
    return events


def _append(db_path: Path, events: list[tuple[str, bytes]]) -> None:
    jobs = [AppendJob(event_id, 1, RECEIVED, body, RELAY, "Svix-Webhooks/1.0")
            for event_id, body in events]  # fmt: skip
    with closing(open_store(db_path)) as log, transaction(log):
        append_jobs(log, jobs)


def _store(db_path: Path, events: list[tuple[str, bytes]] | None = None) -> None:
    with closing(new_store(db_path)):
        pass
    _append(db_path, _events() if events is None else events)
    with closing(connect(db_path)) as conn:
        project(conn)


def _redact(db_path: Path, user: str = MAYA, *extra: str) -> subprocess.CompletedProcess[str]:
    return _cli("redact", "--db", str(db_path), "--user", user, "--reason", "GDPR request 7",
                *extra)  # fmt: skip


def _rows(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db_path)) as conn:
        return conn.execute(sql, params).fetchall()


def _tomas_state(db_path: Path) -> str:
    """Everything about Tomas: his bodies and deliveries in the log, his rows in the
    projections."""
    log = _rows(db_path, "SELECT position, body, body_sha256 FROM events "
                "WHERE event_id LIKE 'msg_tomas_%' ORDER BY position")  # fmt: skip
    log += _rows(db_path, "SELECT * FROM deliveries WHERE event_id LIKE 'msg_tomas_%' ORDER BY id")
    projections = default_projections_path(db_path)
    rows = _rows(projections, "SELECT * FROM users WHERE id = ?", (TOMAS,))
    rows += _rows(projections, "SELECT * FROM sessions WHERE user_id = ? ORDER BY id", (TOMAS,))
    rows += _rows(projections, "SELECT * FROM audit_timeline WHERE user_id = ? OR object_id = ? "
                  "ORDER BY position", (TOMAS, TOMAS))  # fmt: skip
    return hashlib.sha256(repr((log, rows)).encode()).hexdigest()


def _verify(db_path: Path) -> subprocess.CompletedProcess[str]:
    return _cli("verify", "--db", str(db_path))


def _found_in_files(folder: Path, needles: tuple[str, ...], kind: str) -> dict[str, list[str]]:
    """Which of ``needles`` are in the raw bytes of which files of ``folder`` (``kind``: the
    log's files or the projections')."""
    found: dict[str, list[str]] = {}
    for file in sorted(folder.iterdir()):
        if file.is_symlink() or not file.is_file():
            continue
        if ("projections" in file.name) != (kind == "projections"):
            continue
        data = file.read_bytes()
        hits = [needle for needle in needles if needle.encode() in data]
        if hits:
            found[file.name] = hits
    return found


@pytest.fixture
def redacted(db_path: Path) -> Iterator[tuple[Path, str]]:
    """A store after Maya's redaction (and Tomas's state from before it), with a connection
    to each file held open throughout, as a running server and Datasette hold them (else the
    last connection to close would checkpoint the WAL for the redaction)."""
    _store(db_path)
    assert _found_in_files(db_path.parent, PERSONAL, "log")  # the test can see them
    before = _tomas_state(db_path)
    held = [sqlite3.connect(f) for f in (db_path, default_projections_path(db_path))]
    try:
        for conn in held:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        done = _redact(db_path)
        assert done.returncode == 0, done.stderr
        assert "redacted 12 events" in done.stdout, done.stdout
        yield db_path, before
    finally:
        for conn in held:
            conn.close()


def test_verify_passes_after_a_redaction(redacted: tuple[Path, str]) -> None:
    db_path, _ = redacted
    done = _verify(db_path)
    assert done.returncode == 0, done.stderr
    assert "12 events redacted by 1 recorded redactions" in done.stdout


@pytest.mark.parametrize(
    "kind",
    [
        "projections",
        "log",
    ],
)  # fmt: skip
def test_the_user_is_gone_from_every_byte(redacted: tuple[Path, str], kind: str) -> None:
    db_path, _ = redacted
    assert _found_in_files(db_path.parent, PERSONAL, kind) == {}


def _search_shards(db_path: Path) -> dict[str, str]:
    """A hash of the stored index pages of each full-text shard."""
    projections = default_projections_path(db_path)
    return {
        shard: hashlib.sha256(
            repr(_rows(projections, f"SELECT * FROM {shard}_data")).encode()
        ).hexdigest()
        for shard in map(search_shard, range(SEARCH_SHARDS))
    }


def _organizations(numbers: range) -> list[tuple[str, bytes]]:
    """Updates of other organizations, whose timeline rows fall into every shard."""

    def named(n: int) -> Callable[[dict[str, Any]], None]:
        def edit(document: dict[str, Any]) -> None:
            document["data"]["id"] = f"org_other_{n:03d}"
            document["event_attributes"]["http_request"]["client_ip"] = TOMAS_IP

        return edit

    return [(f"msg_org_{n:03d}", _with("organization.updated", named(n))) for n in numbers]


def test_only_the_search_shards_that_held_the_user_are_rewritten(db_path: Path) -> None:
    _store(db_path, _events() + _organizations(range(64)))
    _append(db_path, _organizations(range(64, 128)))  # a second segment in most shards
    with closing(connect(db_path)) as conn:
        project(conn)
    before = _search_shards(db_path)
    assert _redact(db_path).returncode == 0
    after = _search_shards(db_path)
    ((body,),) = _rows(db_path, "SELECT body FROM events WHERE event_type = ?",
                       ("clerk-audit.redaction",))  # fmt: skip
    redacted = json.loads(body)["data"]["positions"]
    shards = _rows(default_projections_path(db_path), f"SELECT position, {shard_of()} FROM "
                   "audit_timeline WHERE position IN (SELECT max(position) FROM audit_timeline) "
                   f"OR position IN ({', '.join(map(str, redacted))})")  # fmt: skip
    held = {search_shard(n) for position, n in shards if position in redacted}
    assert len(held) > 1  # her rows are spread, so the bytes test sees every shard they are in
    recorded = {search_shard(n) for position, n in shards if position not in redacted}
    assert {shard for shard in before if before[shard] != after[shard]} == held | recorded
    assert _found_in_files(db_path.parent, PERSONAL, "projections") == {}
    with closing(connect(db_path)) as conn:
        assert misindexed(conn) == []


def test_the_projections_show_the_redacted_state(redacted: tuple[Path, str]) -> None:
    db_path, _ = redacted
    projections = default_projections_path(db_path)
    user = _rows(projections, "SELECT primary_email_address, first_name, event_id, deleted "
                 "FROM users WHERE id = ?", (MAYA,))  # fmt: skip
    assert user == [("[redacted]", "[redacted]", "msg_maya_01", 0)]  # same winner, redacted
    ips = _rows(projections, "SELECT DISTINCT client_ip FROM audit_timeline WHERE user_id = ?",
                (MAYA,))  # fmt: skip
    assert ips == [("[redacted]",)]
    invitation = _rows(projections, "SELECT email_address FROM organization_invitations "
                       "WHERE inviter_id = ?", (MAYA,))  # fmt: skip
    assert invitation == [(TOMAS_EMAIL,)]  # the invitee of an invitation she sent is kept
    relays = _rows(db_path, "SELECT DISTINCT remote_addr, user_agent FROM deliveries "
                   "WHERE event_id LIKE 'msg_maya_%'")  # fmt: skip
    assert relays == [("[redacted]", "[redacted]")]


def test_the_redaction_is_recorded_without_personal_data(redacted: tuple[Path, str]) -> None:
    db_path, _ = redacted
    ((body,),) = _rows(db_path, "SELECT body FROM events WHERE event_type = ?",
                       ("clerk-audit.redaction",))  # fmt: skip
    data = json.loads(body)["data"]
    assert data["reason"] == "GDPR request 7" and data["actor"]
    assert len(data["positions"]) == 12 == len(data["body_sha256"])
    assert not any(value in body.decode() for value in (*PERSONAL, MAYA))
    recorded = _rows(db_path, "SELECT position FROM redactions ORDER BY position")
    assert [p for (p,) in recorded] == data["positions"]


def test_other_users_are_unchanged(redacted: tuple[Path, str]) -> None:
    db_path, before = redacted
    assert _tomas_state(db_path) == before


def test_the_projections_equal_a_rebuild_of_the_redacted_log(redacted: tuple[Path, str]) -> None:
    db_path, _ = redacted
    check = _cli("rebuild", "--check", "--db", str(db_path))
    assert check.returncode == 0, check.stdout + check.stderr
    with closing(connect(db_path)) as conn:
        live = digest(conn)
    rebuilt = _cli("rebuild", "--db", str(db_path))
    assert rebuilt.returncode == 0, rebuilt.stderr
    with closing(connect(db_path)) as conn:
        assert digest(conn) == live


def test_redacting_again_is_a_no_op(redacted: tuple[Path, str]) -> None:
    db_path, _ = redacted
    with closing(connect(db_path)) as conn:
        state = digest(conn)
    events = _rows(db_path, "SELECT count(*) FROM events")
    again = _redact(db_path)
    assert again.returncode == 0, again.stderr
    assert "nothing to redact" in again.stdout
    assert _rows(db_path, "SELECT count(*) FROM events") == events
    with closing(connect(db_path)) as conn:
        assert digest(conn) == state


def test_the_same_user_signing_up_again_is_stored_as_usual(redacted: tuple[Path, str]) -> None:
    db_path, _ = redacted
    new_id = "user_3MayaAgain000000000000000"

    def again(document: dict[str, Any]) -> None:
        document["data"]["id"] = new_id

    _append(db_path, [("msg_maya_again", _with("user.created", again))])
    with closing(connect(db_path)) as conn:
        project(conn)
    user = _rows(
        default_projections_path(db_path),
        "SELECT primary_email_address, first_name FROM users WHERE id = ?",
        (new_id,),
    )
    assert user == [(MAYA_EMAIL, "Maya")]
    assert _verify(db_path).returncode == 0
    assert "nothing to redact" in _redact(db_path).stdout  # the old id: done; the new: untouched


def test_only_a_recorded_redaction_may_change_a_body(redacted: tuple[Path, str]) -> None:
    db_path, _ = redacted
    (tomas,), (maya,) = (_rows(db_path, "SELECT position FROM events WHERE event_id = ?", (e,))[0]
                         for e in ("msg_tomas_00", "msg_maya_00"))  # fmt: skip
    with closing(open_store(db_path)) as conn:
        for statement, params in (
            ("UPDATE events SET body = CAST('{}' AS BLOB) WHERE position = ?", (tomas,)),
            ("UPDATE events SET body = CAST('{}' AS BLOB) WHERE position = ?", (maya,)),
            ("UPDATE deliveries SET remote_addr = NULL WHERE event_id = 'msg_tomas_00'", ()),
            ("UPDATE deliveries SET outcome = 'rejected' WHERE event_id = 'msg_maya_00'", ()),
            ("INSERT INTO redactions VALUES (?, 'redaction_forged', X'00')", (tomas,)),
        ):
            with pytest.raises(sqlite3.IntegrityError, match=r"append-only|redactions"):
                conn.execute(statement, params)


def test_the_update_path_lets_a_body_change_and_nothing_else(db_path: Path) -> None:
    _store(db_path)
    with closing(open_store(db_path)) as conn:
        conn.execute("BEGIN IMMEDIATE")
        record = redaction_record(actor="test", reason="test", bodies=[(1, b"{}")])
        append_many(conn, [record])
        conn.execute("INSERT INTO redactions VALUES (1, ?, CAST('{}' AS BLOB))",
                     (record.event_id,))  # fmt: skip
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE events SET body = CAST('[]' AS BLOB) WHERE position = 1")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE events SET body = CAST('{}' AS BLOB), event_type = 'x' "
                         "WHERE position = 1")  # fmt: skip
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE events SET body = CAST('{}' AS BLOB) WHERE position = 2")
        conn.execute("UPDATE events SET body = CAST('{}' AS BLOB) WHERE position = 1")
        conn.execute("COMMIT")


def _hostile(db_path: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """A hostile editor: plain sqlite3, the triggers dropped first."""
    with closing(sqlite3.connect(db_path)) as conn:
        triggers = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        for (name,) in triggers.fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        for statement, params in statements:
            conn.execute(statement, params)
        conn.commit()


def _position(db_path: Path, event_id: str) -> int:
    ((position,),) = _rows(db_path, "SELECT position FROM events WHERE event_id = ?", (event_id,))
    return int(position)


EDIT = "UPDATE events SET body = CAST('{\"forged\": 1}' AS BLOB) WHERE position = ?"


def test_a_redactions_row_without_a_redaction_event_is_caught(db_path: Path) -> None:
    _store(db_path)
    target = _position(db_path, "msg_tomas_00")
    _hostile(db_path, ("INSERT INTO redactions VALUES (?, 'redaction_forged', X'00')",
                       (target,)), (EDIT, (target,)))  # fmt: skip
    done = _verify(db_path)
    assert done.returncode == 1
    assert f"chain broken at position {target}: the body does not match" in done.stderr


def test_a_position_the_redaction_event_does_not_list_is_caught(
    redacted: tuple[Path, str],
) -> None:
    db_path, _ = redacted
    target = _position(db_path, "msg_tomas_00")
    ((event_id,),) = _rows(db_path, "SELECT event_id FROM events WHERE event_type = ?",
                           ("clerk-audit.redaction",))  # fmt: skip
    _hostile(db_path, ("INSERT INTO redactions VALUES (?, ?, X'00')", (target, event_id)),
             (EDIT, (target,)))  # fmt: skip
    done = _verify(db_path)
    assert done.returncode == 1
    assert f"chain broken at position {target}: the body does not match" in done.stderr


def test_a_redacted_body_edited_afterwards_is_caught(redacted: tuple[Path, str]) -> None:
    db_path, _ = redacted
    target = _position(db_path, "msg_maya_00")
    _hostile(db_path, (EDIT, (target,)))
    done = _verify(db_path)
    assert done.returncode == 1
    assert f"chain broken at position {target}: the body does not match" in done.stderr


def test_a_delivered_body_of_a_reserved_type_is_quarantined(db_path: Path) -> None:
    forged = json.dumps({"object": "event", "type": "clerk-audit.redaction", "timestamp": 1,
                         "data": {"id": "msg_forged", "positions": [1]}}).encode()  # fmt: skip
    _store(db_path, [("msg_maya_00", _with("user.created")), ("msg_forged", forged)])
    ((status, reason),) = _rows(db_path, "SELECT status, quarantine_reason FROM events "
                                "WHERE event_id = 'msg_forged'")  # fmt: skip
    assert (status, reason) == ("quarantined", RESERVED_REASON)
    with closing(connect(db_path)) as conn:
        assert conn.execute("SELECT count(*) FROM audit_timeline").fetchone() == (1,)


# -- a redaction killed at any moment ----------------------------------------------------------


def _many_sessions(count: int) -> list[tuple[str, bytes]]:
    def session(n: int) -> Callable[[dict[str, Any]], None]:
        def edit(document: dict[str, Any]) -> None:
            document["data"]["id"] = f"sess_maya_{n:05d}"

        return edit

    return [(f"msg_maya_s{n:05d}", _with("session.created", session(n))) for n in range(count)]


def _state(db_path: Path) -> str:
    """``none`` or ``all``; fails on anything in between."""
    records = _rows(db_path, "SELECT body FROM events WHERE event_type = ?",
                    ("clerk-audit.redaction",))  # fmt: skip
    rows = _rows(db_path, "SELECT position, body, body_sha256 FROM events "
                 "WHERE event_id LIKE 'msg_maya_%'")  # fmt: skip
    redactions = {p for (p,) in _rows(db_path, "SELECT position FROM redactions")}
    intact = {p for p, body, sha in rows if hashlib.sha256(body).hexdigest() == sha}
    if not records:
        assert not redactions and intact == {p for p, _, _ in rows}
        return "none"
    ((body,),) = records
    listed = json.loads(body)["data"]["positions"]
    assert redactions == set(listed) and not intact & redactions
    return "all"


def _kill_when_locked(process: subprocess.Popen[str], db_path: Path, delay: float) -> None:
    """Kill ``process`` ``delay`` s after it holds the log's write lock (the marker: another
    connection cannot take the lock), or when it exits."""
    with closing(sqlite3.connect(db_path, timeout=0, isolation_level=None)) as probe:
        while process.poll() is None:
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
            except sqlite3.OperationalError:
                time.sleep(delay)
                break
            time.sleep(0.001)
    process.send_signal(signal.SIGKILL)


def test_a_redaction_killed_at_any_moment_is_all_or_nothing(tmp_path: Path) -> None:
    template = tmp_path / "template"
    template.mkdir()
    _store(template / "audit.db", _events() + _many_sessions(400))
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    started = time.perf_counter()
    shutil.copytree(template, tmp_path / "whole", symlinks=True)
    assert _redact(tmp_path / "whole" / "audit.db").returncode == 0
    whole = time.perf_counter() - started  # how long a redaction takes here, start-up included
    seen: list[str] = []
    for trial in range(6):
        folder = tmp_path / f"trial{trial}"
        shutil.copytree(template, folder, symlinks=True)
        db_path = folder / "audit.db"
        process = subprocess.Popen(
            [str(CLI), "redact", "--db", str(db_path), "--user", MAYA, "--reason", "r"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        if trial % 2:
            killer = threading.Thread(
                target=_kill_when_locked, args=(process, db_path, rng.uniform(0, 0.4))
            )
            killer.start()
            process.wait(timeout=60)
            killer.join()
        else:
            time.sleep(rng.uniform(0.3, 1.0) * whole)
            process.kill()
            process.wait(timeout=60)
        seen.append(_state(db_path))
        assert _verify(db_path).returncode == 0
        finished = _redact(db_path)
        assert finished.returncode == 0, finished.stderr
        assert _state(db_path) == "all"
        assert _cli("rebuild", "--check", "--db", str(db_path)).returncode == 0
        assert _found_in_files(folder, PERSONAL, "projections") == {}
    print("states after the kills:", seen)
