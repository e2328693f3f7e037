"""``clerk-audit export`` and ``import`` (CONTRACT §9): the log as NDJSON and back.

A round trip (export, import into a new store, export again) gives identical files, plain and
gzip, and the same state digest, with bodies of every shape kept byte for byte; import is
idempotent, keeps ``received_at``, marks what it appended, never breaks the order rule, and
refuses a bad line with its number, importing the lines before it and nothing after.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventstore import import_lines, transfer
from eventstore.db import open_reader, open_store, transaction
from eventstore.engine import sqlite3
from eventstore.errors import ImportRefused
from eventstore.feed import COLUMNS, Filters, encode_events, event_json, read_page
from eventstore.import_lines import _checked_line, _ordinary_line
from eventstore.log import append_many, event_record, sha256_hex
from eventstore.paths import default_projections_path
from eventstore.transfer import export_log, import_file
from projections.files import create_empty
from tests.support import direct
from tests.support.store import query

CLI = Path(sys.executable).with_name("clerk-audit")


def envelope(event_type: str, object_id: str, updated: int, **data: Any) -> bytes:
    document = {"data": {"id": object_id, "created_at": 1_700_000_000_000,
                         "updated_at": updated, **data},
                "object": "event", "type": event_type}  # fmt: skip
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def deep(levels: int) -> bytes:
    return b'{"type":"user.updated","data":{"id":"user_deep","x":' + b"[" * (levels - 3) + \
        b"]" * (levels - 3) + b"}}"  # fmt: skip


BODIES: list[tuple[str, bytes]] = [
    ("msg_1", envelope("user.created", "user_1", 1_700_000_000_000, first_name="Zoë 👋")),
    ("msg_2", envelope("user.updated", "user_1", 1_700_000_100_000, first_name="Zoé")),
    ("msg_3", json.dumps({"type": "user.created", "data": {"id": "user_2"}}, indent=2).encode()),
    ("msg_4", b"not json at all"),
    ("msg_5", b"[1, 2, 3]"),
    ("msg_6", b'{"type":"organization.created","data":{"id":"org_1","n":1234567890123456789012}}'),
    ("msg_7", b"\xff\xfe not UTF-8"),
    ("msg_8", deep(1024)),
    ("msg_9", b'{"type":"session.created","data":{"id":"sess_1","s":"a\\"body\\":b\\u2028"}} '),
    ("msg_10", envelope("organizationMembership.created", "orgmem_1", 1_700_000_000_000,
                        organization={"id": "org_1"}, public_user_data={"user_id": "user_1"})),
]  # fmt: skip


def fill(path: Path, bodies: list[tuple[str, bytes]], received: str = "2026-01-02T03:04:05.678Z"
         ) -> None:  # fmt: skip
    with closing(open_store(path, create=True)) as conn, transaction(conn):
        append_many(conn, [event_record(event_id=event_id, svix_timestamp=1_767_000_000 + n,
                                        received_at=received, body=body)
                           for n, (event_id, body) in enumerate(bodies)])  # fmt: skip


def digest(path: Path) -> str:
    """The state digest of the log's projections, built from nothing."""
    create_empty(default_projections_path(path))
    with closing(direct.connect(path)) as conn:
        direct.project(conn)
        return direct.digest(conn)


def events(path: Path) -> list[dict[str, Any]]:
    return query(path, "SELECT * FROM events ORDER BY position")


def clerk_audit(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CLERK_AUDIT_DB"}
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip


def test_every_shape_of_body_survives_a_round_trip(tmp_path: Path) -> None:
    source, copy = tmp_path / "source.db", tmp_path / "copy.db"
    fill(source, BODIES)
    statuses = {row["event_id"]: row["status"] for row in events(source)}
    assert statuses["msg_4"] == statuses["msg_7"] == "quarantined"
    assert statuses["msg_8"] == statuses["msg_6"] == "ok"

    export_log(source, tmp_path / "one.ndjson")
    lines = (tmp_path / "one.ndjson").read_bytes().splitlines()
    assert len(lines) == len(BODIES)
    parsed = [json.loads(line) for line in lines[:7]]  # msg_8 is deeper than json's default
    assert parsed[0]["body"]["data"]["first_name"] == "Zoë 👋"
    assert parsed[2]["body_text"] == BODIES[2][1].decode()  # JSON over several lines:
    assert parsed[2]["body"] == json.loads(BODIES[2][1])  # and on one line, for readers
    assert parsed[3]["body_text"] == "not json at all"
    assert "body_base64" in parsed[6]

    result = import_file(copy, tmp_path / "one.ndjson")
    assert (result.imported, result.skipped, result.first, result.last) == (10, 0, 1, 10)
    export_log(copy, tmp_path / "two.ndjson")
    assert (tmp_path / "two.ndjson").read_bytes() == (tmp_path / "one.ndjson").read_bytes()
    assert [(r["event_id"], r["body"]) for r in events(copy)] == BODIES
    assert events(copy) == events(source)  # every column, chain and received_at included
    assert digest(copy) == digest(source)


def test_the_cli_round_trip_is_identical_gzipped_and_idempotent(tmp_path: Path) -> None:
    source, copy = tmp_path / "source.db", tmp_path / "copy.db"
    fill(source, BODIES)
    first, second = tmp_path / "a.ndjson.gz", tmp_path / "b.ndjson.gz"
    done = clerk_audit("export", "--db", str(source), "--out", str(first))
    assert done.returncode == 0, done.stderr
    assert "exported 10 events (positions 1..10)" in done.stderr
    assert gzip.decompress(first.read_bytes()).count(b"\n") == 10

    done = clerk_audit("import", "--db", str(copy), str(first))
    assert done.returncode == 0, done.stderr
    assert "10 imported (positions 1..10), 0 already stored" in done.stdout
    assert clerk_audit("export", "--db", str(copy), "--out", str(second)).returncode == 0
    assert first.read_bytes() == second.read_bytes()

    again = clerk_audit("import", "--db", str(copy), str(first))
    assert again.returncode == 0, again.stderr
    assert "0 imported, 10 already stored" in again.stdout
    assert len(events(copy)) == 10

    (run,) = query(copy, "SELECT * FROM imports")
    assert run["source"] == "a.ndjson.gz"
    marks = query(copy, "SELECT * FROM imported_events ORDER BY position")
    assert [(m["position"], m["import_id"], m["source_position"]) for m in marks] == [
        (n, run["id"], n) for n in range(1, 11)
    ]


def test_export_after_writes_an_increment_that_imports_on_top(tmp_path: Path) -> None:
    source, copy = tmp_path / "source.db", tmp_path / "copy.db"
    fill(source, BODIES[:4])
    export_log(source, tmp_path / "full.ndjson")
    import_file(copy, tmp_path / "full.ndjson")
    fill(source, BODIES[4:])
    assert export_log(source, tmp_path / "more.ndjson", after=4).events == 6
    import_file(copy, tmp_path / "more.ndjson")
    assert events(copy) == events(source)


def test_an_import_into_a_busy_store_appends_and_keeps_the_order_rule(tmp_path: Path) -> None:
    """The imported events land after the target's own, in other positions; the projections
    are those of the same set of events whatever the order."""
    history = [
        ("msg_a", envelope("user.created", "user_1", 1_700_000_000_000, first_name="Old")),
        ("msg_b", envelope("user.updated", "user_1", 1_700_000_300_000, first_name="Newest")),
        ("msg_c", envelope("user.updated", "user_1", 1_700_000_200_000, first_name="Newer")),
    ]
    exported, target, reference = tmp_path / "x.db", tmp_path / "target.db", tmp_path / "r.db"
    fill(exported, history[:2])
    fill(target, history[2:], received="2026-05-05T00:00:00.000Z")
    fill(reference, history)
    export_log(exported, tmp_path / "x.ndjson")
    result = import_file(target, tmp_path / "x.ndjson")
    assert (result.first, result.last) == (2, 3)
    rows = events(target)
    assert [r["event_id"] for r in rows] == ["msg_c", "msg_a", "msg_b"]
    assert rows[1]["received_at"] == "2026-01-02T03:04:05.678Z"  # kept, not the import's time
    assert digest(target) == digest(reference)
    with closing(direct.connect(target)) as conn:
        assert conn.execute("SELECT first_name FROM users").fetchone() == ("Newest",)
    verify = clerk_audit("verify", "--db", str(target))
    assert verify.returncode == 0, verify.stdout + verify.stderr


def line_file(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "bad.ndjson"
    path.write_bytes(b"".join(lines))
    return path


def good_lines(tmp_path: Path) -> list[bytes]:
    fill(tmp_path / "source.db", BODIES[:4])
    export_log(tmp_path / "source.db", tmp_path / "good.ndjson")
    return (tmp_path / "good.ndjson").read_bytes().splitlines(keepends=True)


def refused(target: Path, path: Path) -> str:
    with pytest.raises(ImportRefused) as caught:
        import_file(target, path)
    return str(caught.value)


def test_a_body_that_does_not_match_its_hash_is_refused_with_its_line(tmp_path: Path) -> None:
    lines = good_lines(tmp_path)
    tampered = lines[1].replace(b"Zo\xc3\xa9", b"Zoe")
    assert tampered != lines[1]
    target = tmp_path / "target.db"
    message = refused(target, line_file(tmp_path, [lines[0], tampered, lines[2], lines[3]]))
    assert "line 2: the body does not match its body_sha256" in message
    assert "1 events before it were" in message
    assert [r["event_id"] for r in events(target)] == ["msg_1"]  # before it, nothing after


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda line: line[: len(line) // 2], "not JSON"),  # and joined to the next line
        (lambda line: b"this is not json\n", "not JSON"),
        (lambda line: b"[1, 2]\n", "a JSON list, not an object"),
        (lambda line: line.replace(b'"body_text"', b'"t"').replace(b'"body"', b'"b"'), "no body"),
        (lambda line: line.replace(b'"status":"ok"', b'"status":"fine"'), "status must be"),
        (lambda line: line.replace(b'"event_id":"msg_3"', b'"event_id":3'), "event_id must be"),
    ],
)
def test_bad_lines_are_refused_with_their_number(tmp_path: Path, damage: Any, problem: str) -> None:
    lines = good_lines(tmp_path)
    target = tmp_path / "target.db"
    bad = [lines[0], lines[1], damage(lines[2]), lines[3]]
    message = refused(target, line_file(tmp_path, bad))
    assert f"line 3: {problem}" in message
    assert [r["event_id"] for r in events(target)] == ["msg_1", "msg_2"]


def test_a_truncated_last_line_is_refused_and_the_rest_imported(tmp_path: Path) -> None:
    lines = good_lines(tmp_path)
    target = tmp_path / "target.db"
    message = refused(target, line_file(tmp_path, [*lines[:3], lines[3][:-40]]))
    assert "line 4: not a whole JSON object (the line is cut short)" in message
    assert len(events(target)) == 3
    import_file(target, tmp_path / "good.ndjson")  # the whole file, once repaired
    assert len(events(target)) == 4


def test_an_event_id_stored_with_another_body_is_refused(tmp_path: Path) -> None:
    lines = good_lines(tmp_path)
    target = tmp_path / "target.db"
    fill(target, [("msg_2", envelope("user.updated", "user_1", 1, first_name="Other"))])
    message = refused(target, line_file(tmp_path, lines))
    assert "line 2: event msg_2 is already stored (position 1) with a different body" in message
    assert [r["event_id"] for r in events(target)] == ["msg_2", "msg_1"]


def test_the_cli_names_the_line_and_exits_1(tmp_path: Path) -> None:
    lines = good_lines(tmp_path)
    path = line_file(tmp_path, [lines[0], b"oops\n"])
    done = clerk_audit("import", "--db", str(tmp_path / "t.db"), str(path))
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("clerk-audit: error: ")
    assert "bad.ndjson: line 2: not JSON" in line


def test_an_ok_status_on_a_body_that_is_not_an_event_is_refused(tmp_path: Path) -> None:
    lines = good_lines(tmp_path)
    forged = lines[3].replace(b'"status":"quarantined"', b'"status":"ok"')
    forged = forged.replace(b'"event_type":null', b'"event_type":"user.created"')
    forged = forged.replace(b'"quarantine_reason":"body is not valid JSON', b'"x":"')
    message = refused(tmp_path / "t.db", line_file(tmp_path, [forged]))
    assert "line 1: status is ok but the body is not an event" in message


def test_the_exact_text_of_a_multi_line_body_is_checked_not_its_copy(tmp_path: Path) -> None:
    lines = good_lines(tmp_path)
    assert b'"body_text"' in lines[2] and b'"body":{' in lines[2]
    text = json.loads(lines[2])["body_text"]
    forged = lines[2].replace(json.dumps(text).encode(), json.dumps("garbage").encode())
    forged = forged.replace(
        json.loads(lines[2])["body_sha256"].encode(), sha256_hex(b"garbage").encode()
    )
    message = refused(tmp_path / "t.db", line_file(tmp_path, [forged]))
    assert "line 1: status is ok but the body is not an event" in message


def test_import_reads_gzip_whatever_the_name(tmp_path: Path) -> None:
    lines = good_lines(tmp_path)
    path = tmp_path / "export.data"
    path.write_bytes(gzip.compress(b"".join(lines)))
    assert import_file(tmp_path / "t.db", path).imported == 4
    with closing(sqlite3.connect(tmp_path / "t.db")) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (4,)


# The fast paths: an ordinary line, batches read ahead, pages joined once ---------------------

_VALUES: st.SearchStrategy[object] = st.sampled_from(
    [None, "", "x", "user.created", 0, 7, True, 1.5, [], {}, "ok", "quarantined"]
)
_BODIES = st.sampled_from([b'{"type":"user.created","data":{"id":"user_9"}}', b"[1]",
                           b'{"type":1}', b'{"data":{}}', b'{"type":"x"} ', b'"s"',
                           b'{"type":"a","x":1e400}', b'{"type":"a","\xff":1}'])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    data=st.data(),
    changes=st.lists(st.tuples(st.sampled_from([*COLUMNS, "extra"]), _VALUES), max_size=3),
    drop=st.sets(st.sampled_from(COLUMNS), max_size=2),
    shuffle=st.booleans(),
    body=st.one_of(st.none(), _BODIES),
    rehash=st.booleans(),
)
def test_an_ordinary_line_is_read_as_every_rule_reads_it(
    data: st.DataObject, changes: list[tuple[str, Any]], drop: set[str], shuffle: bool,
    body: bytes | None, rehash: bool,
) -> None:  # fmt: skip
    """Whatever the fast path accepts, the checked path accepts the same way (and whatever it
    leaves, the checked path reads or refuses with its reason)."""
    line = data.draw(st.sampled_from(ORDINARY))
    start = line.index(b',"body":')
    fields, raw = orjson.loads(line[:start] + b"}"), line[start + 8 : line.rindex(b"}")]
    raw = raw if body is None else body
    fields |= dict(changes)
    for name in drop:
        fields.pop(name, None)
    if rehash:
        fields["body_sha256"] = sha256_hex(raw)
    items = list(fields.items())
    if shuffle:
        items = data.draw(st.permutations(items))
    changed = orjson.dumps(dict(items))[:-1] + b',"body":' + raw + b"}\n"
    fast = _ordinary_line(changed)
    if fast is not None:
        assert fast == _checked_line(changed)
    if changed == line:
        assert fast is not None, "an exported line is not read by the fast path"


def _ordinary_lines() -> list[bytes]:
    bodies = [(event_id, body) for event_id, body in BODIES if b"\n" not in body]
    with tempfile.TemporaryDirectory() as folder:
        fill(Path(folder) / "a.db", bodies)
        export_log(Path(folder) / "a.db", Path(folder) / "a.ndjson")
        lines = (Path(folder) / "a.ndjson").read_bytes().splitlines(keepends=True)
    return [line for line in lines if b'"status":"ok"' in line]


ORDINARY = _ordinary_lines()


CHECKERS = pytest.mark.parametrize(
    "parallel_after", [import_lines.PARALLEL_BYTES, 0], ids=["thread", "processes"]
)
"""Lines checked on a thread (a small file), or on checker processes (a large one)."""


@CHECKERS
def test_batches_read_ahead_are_written_in_order_until_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parallel_after: int
) -> None:
    monkeypatch.setattr(transfer, "IMPORT_BATCH", 2)
    monkeypatch.setattr(import_lines, "READ_CHUNK", 1000)  # about a line a chunk
    many = [(f"msg_{n}", envelope("user.updated", f"user_{n}", 1_700_000_000_000 + n))
            for n in range(7)]  # fmt: skip
    fill(tmp_path / "source.db", many)
    export_log(tmp_path / "source.db", tmp_path / "all.ndjson")
    lines = (tmp_path / "all.ndjson").read_bytes().splitlines(keepends=True)
    lines[5] = lines[5].replace(b'"status":"ok"', b'"status":"nope"')
    with pytest.raises(ImportRefused) as caught:
        import_file(tmp_path / "t.db", line_file(tmp_path, lines), parallel_after=parallel_after)
    message = str(caught.value)
    assert "line 6: status must be" in message and "5 events before it were" in message
    assert [r["event_id"] for r in events(tmp_path / "t.db")] == [f"msg_{n}" for n in range(5)]
    result = import_file(tmp_path / "t.db", tmp_path / "all.ndjson", parallel_after=parallel_after)
    assert (result.imported, result.skipped) == (2, 5)
    assert events(tmp_path / "t.db") == events(tmp_path / "source.db")


@CHECKERS
def test_the_lines_before_a_broken_gzip_stream_are_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parallel_after: int
) -> None:
    monkeypatch.setattr(transfer, "IMPORT_BATCH", 2)
    monkeypatch.setattr(import_lines, "READ_CHUNK", 4096)
    many = [(f"msg_{n}", envelope("user.updated", f"user_{n}", 1_700_000_000_000 + n,
                                  note=os.urandom(300).hex())) for n in range(40)]  # fmt: skip
    fill(tmp_path / "source.db", many)
    export_log(tmp_path / "source.db", tmp_path / "all.ndjson.gz")
    whole = (tmp_path / "all.ndjson.gz").read_bytes()
    (tmp_path / "cut.ndjson.gz").write_bytes(whole[: len(whole) * 2 // 3])
    with pytest.raises(ImportRefused, match=r"cannot read after line (\d+)") as caught:
        import_file(tmp_path / "t.db", tmp_path / "cut.ndjson.gz", parallel_after=parallel_after)
    read = int(re.search(r"after line (\d+)", str(caught.value)).group(1))  # type: ignore[union-attr]
    assert 0 < read < 40
    assert [r["event_id"] for r in events(tmp_path / "t.db")] == [f"msg_{n}" for n in range(read)]


@pytest.mark.parametrize("one_line", [True, False])
def test_a_page_joined_once_equals_its_events_one_by_one(tmp_path: Path, one_line: bool) -> None:
    fill(tmp_path / "a.db", BODIES)
    with closing(open_reader(tmp_path / "a.db")) as conn:
        rows = read_page(conn, 0, 100, Filters()).rows
    for separator in (b"\n", b","):
        expected = b"[" + separator.join(event_json(row, one_line) for row in rows) + b"]"
        assert encode_events(rows, one_line, separator, b"[", b"]") == expected
    assert encode_events([], one_line, b",", b"[", b"]") == b"[]"


def many(count: int, note_bytes: int = 300) -> list[tuple[str, bytes]]:
    return [(f"msg_{n:06d}", envelope("user.updated", f"user_{n % 50}", 1_700_000_000_000 + n,
                                      note=os.urandom(note_bytes // 2).hex()))
            for n in range(count)]  # fmt: skip


def test_checker_processes_import_what_a_thread_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks dealt to several checker processes come back in order: the same events, the
    same positions and chain, a conflict named by its line, as when checked on a thread."""
    monkeypatch.setattr(import_lines, "READ_CHUNK", 8192)
    monkeypatch.setattr(import_lines, "_checkers", lambda: 3)
    fill(tmp_path / "source.db", many(200) + BODIES)
    export_log(tmp_path / "source.db", tmp_path / "all.ndjson")
    result = import_file(tmp_path / "copy.db", tmp_path / "all.ndjson", parallel_after=0)
    assert (result.imported, result.first, result.last) == (210, 1, 210)
    assert events(tmp_path / "copy.db") == events(tmp_path / "source.db")

    fill(tmp_path / "other.db", [("msg_000150", b'{"type":"user.deleted"}')])
    with pytest.raises(ImportRefused, match="line 151: event msg_000150 is already stored"):
        import_file(tmp_path / "other.db", tmp_path / "all.ndjson", parallel_after=0)
    assert len(events(tmp_path / "other.db")) == 151


def _journal_seen(target: Path) -> tuple[list[bool], Any]:
    """A progress callback noting, after each batch, whether the log has a WAL file."""
    seen: list[bool] = []
    return seen, lambda _: seen.append(Path(f"{target}-wal").exists())


def test_an_import_alone_writes_each_page_once_and_leaves_the_wal_mode(tmp_path: Path) -> None:
    """With no other connection, the appends go through a rollback journal (no WAL to copy
    into the file afterwards); the log is in WAL mode again at the end."""
    fill(tmp_path / "source.db", many(30))
    export_log(tmp_path / "source.db", tmp_path / "all.ndjson")
    target = tmp_path / "target.db"
    seen, progress = _journal_seen(target)
    import_file(target, tmp_path / "all.ndjson", progress)
    assert seen and not any(seen)
    with closing(sqlite3.connect(target)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert events(target) == events(tmp_path / "source.db")


def test_an_import_beside_a_reader_keeps_the_wal(tmp_path: Path) -> None:
    """A log another connection has open (the server, the projector) stays in WAL mode, and
    its reader sees the imported events."""
    bodies = many(30)
    fill(tmp_path / "source.db", bodies)
    export_log(tmp_path / "source.db", tmp_path / "all.ndjson")
    target = tmp_path / "target.db"
    fill(target, bodies[:1])
    seen, progress = _journal_seen(target)
    with closing(open_reader(target)) as reader:
        assert reader.execute("SELECT count(*) FROM events").fetchone() == (1,)
        result = import_file(target, tmp_path / "all.ndjson", progress)
        assert reader.execute("SELECT count(*) FROM events").fetchone() == (30,)
    assert (result.imported, result.skipped) == (29, 1)
    assert seen and all(seen)


def test_an_import_killed_midway_leaves_a_log_that_verifies_and_resumes(tmp_path: Path) -> None:
    source, target = tmp_path / "source.db", tmp_path / "target.db"
    fill(source, many(20_000, note_bytes=1200))
    export_log(source, tmp_path / "all.ndjson")
    env = {k: v for k, v in os.environ.items() if k != "CLERK_AUDIT_DB"}
    process = subprocess.Popen([str(CLI), "import", "--db", str(target),
                                str(tmp_path / "all.ndjson")], env=env)  # fmt: skip
    while process.poll() is None and (not target.exists() or target.stat().st_size < 12 << 20):
        time.sleep(0.005)
    process.kill()
    assert process.wait() == -signal.SIGKILL, "the import ended before it could be killed"
    verify = clerk_audit("verify", "--db", str(target))
    assert verify.returncode == 0, verify.stdout + verify.stderr
    kept = len(events(target))
    assert 0 < kept < 20_000
    result = import_file(target, tmp_path / "all.ndjson")
    assert (result.imported, result.skipped) == (20_000 - kept, kept)
    assert events(target) == events(source)
