"""The benchmark's own machinery works: bodies, delivery order, the generated log, the load
generator against the baselines and our server (with the projections' lag), the disk figures
and the profiles (no timings are asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from bench.bodies import Renderer
from bench.consumers import TOKEN, _transfer_round
from bench.deliveries import delivery_order, new_secret, write_pool
from bench.disk import log_usage, projections_usage
from bench.genlog import _rows, ensure_log
from bench.integrity import _copy_projections, _redaction_s
from bench.lag import Sample, summarise
from bench.loadgen import _process_cpu
from bench.profiling import profile_rebuild
from bench.servers import (
    PROJECT,
    baseline_command,
    free_port,
    remove_store,
    running,
    serve_command,
    wait_healthy,
)
from bench.stats import Section
from bench.workload import plan
from eventstore.db import open_store, transaction
from eventstore.paths import default_projections_path
from eventstore.writer import AppendJob, append_jobs
from projections import rebuild

STUBS = {"user.deleted", "organization.deleted"}


def test_bodies_are_unique_clerk_events_of_1_to_3_kb() -> None:
    renderer = Renderer()
    rendered = [renderer.render(spec) for spec in plan(1000, seed=3)]
    assert len({event.event_id for event in rendered}) == len(rendered)
    sizes = [len(event.body) for event in rendered if event.event_type not in STUBS]
    assert min(sizes) >= 800
    assert max(sizes) <= 3000


def test_generated_log_rows_match_event_record() -> None:
    """``_rows`` checks a sample against ``eventstore.log.event_record`` and raises if not."""
    rows = _rows((0, plan(1500, seed=4)))
    assert len(rows) == 1500


def test_every_event_is_delivered_once_plus_redeliveries() -> None:
    order = delivery_order(1000, 0.2, seed=1)
    assert sorted(set(order)) == list(range(1000))
    assert 0.1 < (len(order) - 1000) / len(order) < 0.3


def test_lag_in_events_and_in_seconds() -> None:
    """Lag in seconds: until a later sample shows ``projected`` past the sample's position."""
    during = [Sample(0.0, 10, 10, 0), Sample(0.1, 30, 12, 0), Sample(0.2, 50, 31, 0)]
    after = [Sample(0.25, 50, 40, 0), Sample(0.3, 50, 50, 0)]
    summary = summarise(during, after, 0.1, rate=100.0)
    assert summary["lag_max_events"] == 19
    assert summary["lag_max_s"] == pytest.approx(0.1)  # 30 was projected by 0.2, 50 by 0.3
    assert summary["lag_p99_s_by_rate"] == pytest.approx(0.19)
    assert summary["catch_up_s"] == 0.1
    assert summary["final_projected"] == summary["final_position"] == 50
    never = summarise(during, [], None, rate=100.0)
    assert never["lag_max_s"] is None  # 50 was never projected: unknown, not 0


def _loadgen(port: int, pool: Path, env: dict[str, str], *extra: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--pool", str(pool),
         "--seconds", "1", "--connections", "4", *extra],
        env=os.environ | env, cwd=PROJECT, capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    summary: dict[str, object] = json.loads(done.stdout)
    assert summary["requests"]
    assert summary["ok"] == summary["requests"]
    assert summary["non_2xx"] == {}
    assert summary["errors"] == {}
    return summary


def test_the_load_generator_gets_only_2xx_from_a_baseline(tmp_path: Path) -> None:
    """The naive baseline, sent the pool over and over (``--wrap``, as the bare one is): the
    first round is stored, the next ones are duplicates."""
    pool, port = tmp_path / "pool.pickle", free_port()
    write_pool(pool, 20)
    env = {"CLERK_WEBHOOK_SIGNING_SECRET": new_secret()}
    command = baseline_command("naive", port, tmp_path / "naive.db")
    with running(command, env=env, log=tmp_path / "server.log") as server:
        wait_healthy(port, server)
        summary = _loadgen(port, pool, env, "--events", "20", "--wrap")
    assert summary["stored"] == 20
    assert summary["duplicate"] == summary["ok"] - 20  # type: ignore[operator]


def test_the_load_generator_samples_our_projections_lag(tmp_path: Path) -> None:
    """Against ``clerk-audit serve``: only 2xx, lag samples, a measured catch-up, and the
    server's CPU told apart by process (the writer and the projector are both children)."""
    pool, port, db_path = tmp_path / "pool.pickle", free_port(), tmp_path / "ours.db"
    write_pool(pool, 200)
    env = {"CLERK_WEBHOOK_SIGNING_SECRET": new_secret()}
    with running(serve_command(port, db_path), env=env, log=tmp_path / "server.log") as server:
        summary = _loadgen(
            port, pool, env, "--events", "200", "--sample-ms", "50", "--catch-up-timeout", "20"
        )
        cpu = _process_cpu(server.pid)  # since each process started: never 0 for ours
    assert cpu["main"] > 0 and cpu["writer"] > 0 and cpu["projector"] > 0
    assert cpu["other"] == 0
    assert summary["stored"]
    assert summary["lag_samples"]
    assert summary["catch_up_s"] is not None
    assert summary["final_projected"] == summary["final_position"] == summary["stored"]
    usage = log_usage(db_path)
    assert usage["events"] == summary["stored"]
    assert usage["deliveries"] == summary["requests"]
    remove_store(db_path)
    assert not list(tmp_path.glob("ours*.db*"))


def test_disk_figures_and_the_rebuild_profile_of_a_generated_log(tmp_path: Path) -> None:
    log = ensure_log(tmp_path, 300)
    usage = log_usage(log)
    assert usage["events"] == 300
    assert usage["body_bytes"] > 300 * 800
    assert usage["events_table_bytes"] > usage["body_bytes"]
    assert projections_usage(log) == {}
    rebuild(log, default_projections_path(log), workers=0)
    assert projections_usage(log)["file_bytes"] > 0
    session, about = profile_rebuild(log, 300)
    assert session.duration > 0
    assert "300 events" in about


@pytest.mark.parametrize("projections", ["none", "complete", "behind"])
def test_the_redaction_figure_on_a_copy_projected_or_rebuilt(
    tmp_path: Path, projections: str
) -> None:
    """The redaction's copy gets the log's projections only when they are complete (else it
    is rebuilt), and the redaction of the appended user's events is timed either way."""
    log = ensure_log(tmp_path, 300)
    if projections != "none":
        rebuild(log, default_projections_path(log), workers=0)
    if projections == "behind":
        job = AppendJob("msg_smoke_behind", 1, "2026-12-01T00:00:00.000Z", b'{"type":"x"}')
        with closing(open_store(log)) as conn, transaction(conn):
            append_jobs(conn, [job])
    assert _redaction_s(log, tmp_path / "work") >= 0
    assert not (tmp_path / "work" / "redaction").exists()
    copy = tmp_path / "copy" / "audit.db"
    copy.parent.mkdir()
    copied = _copy_projections(log, copy)
    assert copied is (projections == "complete")
    assert default_projections_path(copy).resolve().is_file() is copied


def test_feed_readers_follow_the_log_during_the_load(tmp_path: Path) -> None:
    """``--feed-readers``: long polls on ``GET /events`` that read every stored event."""
    pool, port, db_path = tmp_path / "pool.pickle", free_port(), tmp_path / "ours.db"
    write_pool(pool, 200)
    env = {"CLERK_WEBHOOK_SIGNING_SECRET": new_secret(), "CLERK_AUDIT_FEED_TOKEN": TOKEN}
    with running(serve_command(port, db_path), env=env, log=tmp_path / "server.log"):
        summary = _loadgen(port, pool, env, "--events", "200", "--feed-readers", "2")
    reads = summary["feed"]
    assert isinstance(reads, dict)
    assert reads["failures"] == 0 and reads["requests"] >= 2
    assert 0 < reads["events"] <= 2 * summary["stored"]  # type: ignore[operator]


def test_the_consumers_round_measures_export_import_and_the_feed(tmp_path: Path) -> None:
    log = ensure_log(tmp_path, 300)
    (tmp_path / "consumers").mkdir()
    section = Section("Consumers")
    _transfer_round(section, log, tmp_path / "consumers", 0)
    for key in ("export", "import", "feed"):
        assert section.figures[f"{key}.events_per_s"].median > 0
        assert section.figures[f"{key}.ratio"].median > 0
    assert section.figures["feed.bytes_per_event"].median > 800
    assert not list((tmp_path / "consumers").iterdir())


def test_the_page_timings_run_on_a_small_store(tmp_path: Path) -> None:
    import asyncio

    from bench.queries import measure
    from tests.support.audit_story import fixture_events
    from tests.support.direct import append_all, new_store

    conn = new_store(tmp_path / "audit.db")
    append_all(conn, fixture_events())
    conn.close()
    results = asyncio.run(measure(tmp_path / "audit.db", runs=1))
    assert len(results) == 19
    assert {status for *_, status, _ in results} == {200}
    exports = [size for name, *_, size in results if name.startswith("export ")]
    assert len(exports) == 2 and min(exports) > 0
