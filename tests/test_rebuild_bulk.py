"""The bulk rebuild (``projections.bulk``): worker processes give the same projections as none
and as the live projector, and a rebuild stopped midway leaves the published projections and
nothing else behind."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from eventstore.engine import sqlite3
from eventstore.jsondoc import has_long_number
from eventstore.paths import default_projections_path
from projections import bulk, fold, rebuild
from projections.files import target
from projections.schema import ERRORS, PROJECTION_TABLES
from tests.support.direct import append_all, connect, digest, new_store
from tests.support.history import envelope

BASE = 1_786_000_000_000
KINDS = {"user": "user_", "organization": "org_", "organizationMembership": "orgmem_",
         "session": "sess_"}  # fmt: skip


def _data(kind: str, prefix: str, number: int, n: int) -> dict[str, object]:
    data: dict[str, object] = {
        "id": f"{prefix}{number:03d}", "created_at": BASE + number,
        "updated_at": BASE + number + n * 1000, "first_name": f"F{n}", "name": f"N{n}",
        "user_id": f"user_{number % 7:03d}", "status": "active",
        "organization": {"id": f"org_{number % 5:03d}", "name": "Org"},
        "public_user_data": {"user_id": f"user_{number % 7:03d}", "first_name": "A"},
    }  # fmt: skip
    if kind == "user":
        data["external_id"] = "BIG"  # an integer past 64 bits in the body (see _events)
    return data


def _events(seed: int = 7) -> list[tuple[str, bytes]]:
    """A few hundred events of 60 entities in a shuffled order: updates, ties, deletes as
    stubs, an integer past 64 bits, and a body that is JSON but not an event (quarantined)."""
    rng = random.Random(seed)
    events: list[tuple[str, bytes]] = []
    for number in range(60):
        kind = rng.choice(sorted(KINDS))
        for n in range(rng.randint(1, 6)):
            action = "created" if n == 0 else rng.choice(["updated", "updated", "ended"])
            data = _data(kind, KINDS[kind], number, n)
            stamp = BASE + number + n * 1000 + rng.choice([0, 3])
            body = envelope(f"{kind}.{action}", data, stamp)
            body = body.replace(b'"BIG"', b"123456789012345678901234")
            events.append((f"msg_{number:03d}_{n}", body))
        if rng.random() < 0.3:
            stub = {"id": f"{KINDS[kind]}{number:03d}", "deleted": True}
            events.append((f"msg_{number:03d}_d", envelope(f"{kind}.deleted", stub, BASE)))
    rng.shuffle(events)
    return [*events, ("msg_not_an_event", b'{"data": {"id": "x"}}')]


def _rows(file: Path) -> dict[str, list[tuple[object, ...]]]:
    with closing(sqlite3.connect(file)) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in (*PROJECTION_TABLES, ERRORS)
        }


def _generations(folder: Path) -> list[str]:
    return sorted(f.name for f in folder.iterdir() if re.search(r"\.g\d+\.db$", f.name))


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several part files even for a small log."""
    monkeypatch.setattr(bulk, "SCAN_BATCH", 40)


@pytest.mark.usefixtures("small_batches")
def test_workers_give_the_rows_and_digest_of_no_workers_and_of_the_live_projector(
    db_path: Path,
) -> None:
    conn = new_store(db_path)
    append_all(conn, _events())
    live_digest = digest(conn)
    conn.close()
    projections = default_projections_path(db_path)
    live_file = target(projections)
    assert live_file is not None
    live_rows = _rows(live_file)
    assert len(live_rows["audit_timeline"]) > 200

    results = {}
    built = None
    for workers in (0, 2):
        result = rebuild(db_path, projections, workers=workers)
        built = target(projections)
        assert built is not None
        assert _rows(built) == live_rows, workers
        results[workers] = result.digest
        with closing(connect(db_path)) as again:
            assert digest(again) == result.digest
    assert results == {0: live_digest, 2: live_digest}
    assert built is not None
    assert _generations(db_path.parent) == [built.name]


def test_an_error_midway_leaves_the_published_projections_and_no_file(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = new_store(db_path)
    append_all(conn, _events())
    before = digest(conn)
    conn.close()
    projections = default_projections_path(db_path)
    published = target(projections)

    def broken(*args: object) -> object:
        raise RuntimeError("injected")

    monkeypatch.setattr(bulk, "merge_history", broken)
    with pytest.raises(RuntimeError, match="injected"):
        rebuild(db_path, projections, workers=0)
    assert target(projections) == published
    assert _generations(db_path.parent) == [published.name]  # type: ignore[union-attr]
    assert not [f for f in db_path.parent.iterdir() if ".part-" in f.name]
    with closing(connect(db_path)) as again:
        assert digest(again) == before


@pytest.mark.usefixtures("small_batches")
def test_a_winner_whose_row_cannot_be_made_is_an_error_and_a_loser_that_cannot_is_not(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = new_store(db_path)
    user, org = _data("user", "user_", 1, 0), _data("organization", "org_", 2, 0)
    append_all(conn, [
        ("msg_u0", envelope("user.created", user, BASE)),
        ("msg_u1", envelope("user.updated", {**user, "updated_at": BASE + 9}, BASE + 9)),
        ("msg_o0", envelope("organization.created", org, BASE)),
        ("msg_o1", envelope("organization.updated", {**org, "updated_at": BASE + 9}, BASE + 9)),
    ])  # fmt: skip
    conn.close()
    make = fold.entity_row

    def broken(found: Any, event: Any, deletion: Any = None) -> Any:
        if event.event_id in ("msg_u1", "msg_o0"):  # the user's winner, the organization's loser
            raise ValueError("injected")
        return make(found, event, deletion)

    monkeypatch.setattr(bulk, "entity_row", broken)
    projections = default_projections_path(db_path)
    rebuild(db_path, projections, workers=0)
    rows = _rows(target(projections))  # type: ignore[arg-type]
    assert rows["users"] == []
    assert [(r[0], r[-3]) for r in rows["organizations"]] == [("org_002", "msg_o1")]
    assert [(r[1], r[2]) for r in rows[ERRORS]] == [("msg_u1", "ValueError: injected")]


_SLOW_REBUILD = """
import sys, time
from pathlib import Path
from projections import bulk, rebuild
copy = bulk._copy
def slow(*args):
    copy(*args)
    print("copied", flush=True)
    time.sleep(60)
bulk._copy = slow
rebuild(Path(sys.argv[1]), Path(sys.argv[2]), workers=0)
"""


def test_a_rebuild_killed_midway_leaves_the_published_projections_and_the_next_cleans_up(
    db_path: Path,
) -> None:
    conn = new_store(db_path)
    append_all(conn, _events())
    before = digest(conn)
    conn.close()
    projections = default_projections_path(db_path)
    published = target(projections)
    assert published is not None
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_REBUILD, str(db_path), str(projections)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "copied"
        assert len(_generations(db_path.parent)) == 2  # the one being built
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
    assert target(projections) == published
    with closing(connect(db_path)) as again:
        assert digest(again) == before

    result = rebuild(db_path, projections)
    assert result.digest == before
    built = target(projections)
    assert built is not None and built != published
    assert _generations(db_path.parent) == [built.name]
    assert not [f for f in db_path.parent.iterdir() if ".part-" in f.name]


@pytest.mark.parametrize(
    "body",
    [
        b"", b"1234567890123456789", b"123456789012345678", b'{"a":12345678901234567890}',
        b'{"a":"x1234567890123456789y"}', b'{"a":1785214020003,"b":1785214020003}',
        "{\"é\":\"\u00e9\",\"n\":-12345678901234567890}".encode(), b"9" * 40,
        b'{"a":1234567890.123456789}',
    ],
)  # fmt: skip
def test_long_digits_are_found_as_a_regular_expression_finds_them(body: bytes) -> None:
    expected = re.search(rb"\d{19,}", body) is not None
    assert has_long_number(body) == expected
