"""The benchmark's own machinery works: bodies, delivery order, and the load generator
against the baselines (no timings are asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.bodies import Renderer
from bench.deliveries import delivery_order, new_secret, write_pool
from bench.genlog import _rows
from bench.servers import PROJECT, baseline_command, free_port, running, wait_healthy
from bench.workload import plan

STUBS = {"user.deleted", "organization.deleted"}


def test_bodies_are_unique_clerk_events_of_1_to_3_kb() -> None:
    rendered = [Renderer().render(spec) for spec in plan(1000, seed=3)]
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


@pytest.mark.parametrize("app", ["bare", "naive"])
def test_the_load_generator_gets_only_2xx_from_a_baseline(app: str, tmp_path: Path) -> None:
    pool, port = tmp_path / "pool.pickle", free_port()
    write_pool(pool, 200)
    env = {"CLERK_WEBHOOK_SIGNING_SECRET": new_secret()}
    command = baseline_command(app, port, tmp_path / "naive.db")
    with running(command, env=env, log=tmp_path / "server.log") as server:
        wait_healthy(port, server)
        done = subprocess.run(
            [sys.executable, "-m", "bench.loadgen", "--port", str(port), "--pool", str(pool),
             "--events", "200", "--seconds", "1", "--connections", "4"],
            env=os.environ | env, cwd=PROJECT, capture_output=True, text=True, timeout=60,
            check=True,
        )  # fmt: skip
    summary = json.loads(done.stdout)
    assert summary["requests"] > 0
    assert summary["ok"] == summary["requests"]
    assert summary["non_2xx"] == {}
    assert summary["errors"] == {}
    if app == "naive":
        assert summary["stored"] + summary["duplicate"] == summary["ok"]
        assert summary["stored"] > 0
