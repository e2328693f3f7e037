"""``clerk-audit datasette``: the command, and a real Datasette process on a live store.

The live test runs the real ingest server and ``clerk-audit datasette`` on the same store, with
files not named ``audit.db`` (the databases are still ``audit`` and ``log``, and the metadata
applies) and a rogue Datasette plugin installed on ``PYTHONPATH`` (so the allow-list must keep
it out). Events posted to the server must show in Datasette's JSON API once the server's
projector has applied them, without a restart.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from eventstore.cli import cli
from eventstore.cli.datasette import ALLOWED_PLUGINS
from eventstore.datasette_files import OWN_PLUGINS
from eventstore.db import open_store
from eventstore.engine import sqlite3
from eventstore.paths import default_projections_path
from eventstore.samples import sample_body, sample_event_id
from projections import rebuild
from tests.support.server import Server

CLI = Path(sys.executable).with_name("clerk-audit")
_RUNNING = re.compile(r"Uvicorn running on (http://\S+)")
START_TIMEOUT = 30.0
STORY = ("user.created", "organization.created", "organizationMembership.created")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The store of this module's tests: deliberately not ``audit.db``."""
    return tmp_path / "live-store.db"


def rogue_plugin(folder: Path) -> Path:
    """A folder for ``PYTHONPATH`` holding an installed Datasette plugin that is not allowed.

    Importing it writes the file named by ``ROGUE_MARKER``.
    """
    site = folder / "site"
    (site / "rogue_plugin-1.0.dist-info").mkdir(parents=True)
    (site / "rogue_plugin.py").write_text(
        "import os\nimport pathlib\n\nfrom datasette import hookimpl\n\n"
        "pathlib.Path(os.environ['ROGUE_MARKER']).write_text('imported')\n\n\n"
        "@hookimpl\ndef extra_body_script():\n    return ''\n"
    )
    (site / "rogue_plugin-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: rogue-plugin\nVersion: 1.0\n"
    )
    (site / "rogue_plugin-1.0.dist-info" / "entry_points.txt").write_text(
        "[datasette]\nrogue = rogue_plugin\n"
    )
    return site


class Running:
    """A ``clerk-audit datasette`` process: its URL once uvicorn says where it listens."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self.url = ""
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            match = _RUNNING.search(line)
            if match:
                self.url = match.group(1)
                self._ready.set()
        self._ready.set()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=10)
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code


@contextmanager
def running_datasette(db_path: Path, env: Mapping[str, str]) -> Iterator[Running]:
    command = [str(CLI), "datasette", "--db", str(db_path), "--", "--port", "0"]
    process = subprocess.Popen(
        command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env={**env}
    )
    running = Running(process)
    try:
        if not running._ready.wait(START_TIMEOUT) or not running.url:
            raise RuntimeError("datasette did not start:\n" + "".join(running.lines))
        yield running
    finally:
        running.stop()


def test_datasette_reads_the_live_store_with_allowed_plugins_only(
    server: Server, tmp_path: Path
) -> None:
    site = rogue_plugin(tmp_path)
    temp = tmp_path / "tmp"
    temp.mkdir()
    marker = tmp_path / "rogue-imported"
    env = {**os.environ, "PYTHONPATH": str(site), "ROGUE_MARKER": str(marker), "TMPDIR": str(temp)}

    # Control: plain Datasette finds and loads the rogue plugin from this PYTHONPATH.
    plain = subprocess.run(
        [sys.executable, "-m", "datasette", str(server.db_path), "--get", "/-/plugins.json"],
        env={**env, "ROGUE_MARKER": str(tmp_path / "control")},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert '"rogue-plugin"' in plain.stdout and (tmp_path / "control").exists()

    with (
        running_datasette(server.sqlite_path, env) as datasette,
        httpx.Client(base_url=datasette.url, timeout=30) as client,
    ):
        plugins = client.get("/-/plugins.json").json()
        assert {plugin["name"] for plugin in plugins} == {*ALLOWED_PLUGINS, *OWN_PLUGINS}
        assert not marker.exists()
        served = [d["name"] for d in client.get("/-/databases.json").json()]
        assert served == ["audit", "log"]
        assert client.get("/-/settings.json").json()["suggest_facets"] is False

        def timeline() -> list[str]:
            response = client.get("/audit/audit_timeline.json", params={"_shape": "array"})
            assert response.status_code == 200
            return [row["event_id"] for row in response.json()]

        assert timeline() == []
        for name in STORY:
            assert server.post(sample_event_id(name), sample_body(name)).status_code == 200
        logged = client.get("/log/events.json", params={"_shape": "array"}).json()
        assert sorted(row["event_id"] for row in logged) == sorted(map(sample_event_id, STORY))
        server.wait_projected()
        assert sorted(timeline()) == sorted(sample_event_id(name) for name in STORY)

        user_id = sample_event_id("user.created")
        maya = client.get("/audit/users.json", params={"_shape": "array"}).json()[0]["id"]
        history = client.get(
            "/audit/user_history.json", params={"user_id": maya, "_shape": "array"}
        )
        assert history.status_code == 200
        assert user_id in {row["event_id"] for row in history.json()}
        tables = client.get("/audit.json").json()["tables"]
        hidden = {t["name"] for t in tables if t["hidden"]}
        assert {"_projection_meta", "entity_versions", "audit_timeline_fts_0"} <= hidden
        assert all(h.startswith(("_", "entity_", "audit_timeline_fts_")) for h in hidden)
        assert "Clerk audit log" in client.get("/").text
        assert "The svix-id of the event" in client.get("/log/events").text
        assert list(temp.iterdir()) == []  # no temporary metadata any more
    # Stopped by SIGTERM after a graceful shutdown (uvicorn re-raises it).
    assert datasette.process.returncode == -signal.SIGTERM


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["datasette", *args])
    return result.exit_code, result.stderr


def test_a_missing_store_is_one_clear_error(tmp_path: Path) -> None:
    code, stderr = _run("--db", str(tmp_path / "nothing.db"))
    assert code == 1
    assert stderr.splitlines() == [
        f"clerk-audit: error: no store at {tmp_path / 'nothing.db'} "
        f"(start `clerk-audit serve --db {tmp_path / 'nothing.db'}` once to create it)"
    ]


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    code, stderr = _run("--db", str(other))
    assert (
        code == 1
        and stderr
        == f"clerk-audit: error: {other} is a SQLite database but not a clerk-audit store\n"
    )
    log_only = tmp_path / "log-only.db"
    open_store(log_only, create=True).close()  # the log, but no projections yet
    code, stderr = _run("--db", str(log_only))
    projections = default_projections_path(log_only)
    assert code == 1 and stderr == (
        f"clerk-audit: error: no projections file at {projections} "
        f"(run `clerk-audit project --db {log_only}`)\n"
    )


@pytest.mark.parametrize(
    "args", [["-i", "x.db"], ["--immutable=x.db"], ["--plugins-dir", "."], ["-m", "m.yml"]]
)
def test_options_that_would_break_the_guarantees_are_refused(
    db_path: Path, args: list[str]
) -> None:
    open_store(db_path, create=True).close()
    rebuild(db_path, default_projections_path(db_path))
    code, stderr = _run("--db", str(db_path), "--", *args)
    assert code == 1 and stderr.startswith("clerk-audit: error: datasette option")


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(cli, ["datasette", "--help"])
    assert result.exit_code == 0
    assert re.search(
        r"Example:\n +clerk-audit datasette --db data/audit.db -- --port", result.output
    )
