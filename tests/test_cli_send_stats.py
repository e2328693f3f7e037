"""The command line through the real console script: the development secret that ``serve``
creates and ``send`` uses, ``stats``, one-line errors, and ``--help`` with an example."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from eventstore.cli import cli
from eventstore.samples import sample_event_id
from tests.support.server import running_server
from tests.support.signing import new_secret

CLI = Path(sys.executable).with_name("clerk-audit")
SETTINGS_ENV = ("CLERK_WEBHOOK_SIGNING_SECRET", "CLERK_AUDIT_DB")


def clerk_audit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed ``clerk-audit`` with none of our settings in its environment."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    return subprocess.run([str(CLI), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def _count(output: str, outcome: str) -> int:
    match = re.search(rf"^\s*{outcome}\s+(\d+)\b", output, re.MULTILINE)
    assert match, output
    return int(match.group(1))


def test_serve_creates_a_development_secret_that_send_uses_and_stats_counts(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    secret_file = data / "dev-signing-secret"
    with running_server(data / "audit.db", None, cwd=tmp_path) as server:
        assert secret_file.exists()
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        first = clerk_audit("send", "--url", server.ingest_url, "user.created", cwd=tmp_path)
        again = clerk_audit("send", "--url", server.ingest_url, "user.created", cwd=tmp_path)
        server.wait_projected()
    assert server.log.count("development secret") == 1
    assert f"created the development secret in {secret_file}" in server.log
    assert "Clerk's deliveries will not match it" in server.log
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("user.created: 200 ")
    assert '"status":"stored"' in first.stdout and sample_event_id("user.created") in first.stdout
    assert again.returncode == 0 and '"status":"duplicate"' in again.stdout
    shown = clerk_audit("stats", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert (_count(shown.stdout, "events"), _count(shown.stdout, "quarantined events")) == (1, 0)
    assert (_count(shown.stdout, "stored"), _count(shown.stdout, "duplicate")) == (1, 1)
    assert _count(shown.stdout, "rejected") == 0
    assert _count(shown.stdout, "users") == 1
    assert "projected up to position             1  (lag 0 events)" in shown.stdout
    assert _count(shown.stdout, "projection errors") == 0
    text = secret_file.read_text().strip()
    for output in (server.log, first.stdout, first.stderr, again.stdout, shown.stdout):
        assert text not in output and text.removeprefix("whsec_") not in output


def test_a_second_start_reuses_the_development_secret(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with running_server(path, None) as first:
        pass
    secret_file = tmp_path / "dev-signing-secret"
    created = secret_file.read_text()
    with running_server(path, None) as second:
        sent = clerk_audit("send", "--url", second.ingest_url, "--db", str(path), "session.created",
                           cwd=tmp_path)  # fmt: skip
    assert "created the development secret" in first.log
    assert second.log.count("development secret") == 1
    assert f"using the development secret in {secret_file}" in second.log
    assert secret_file.read_text() == created
    assert sent.returncode == 0 and '"status":"stored"' in sent.stdout


def _one_error_line(result: Result) -> str:
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and result.stderr.count("\n") == 1
    assert result.stderr.startswith("clerk-audit: error: ")
    return result.stderr


def test_send_without_a_server_is_one_error_line(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/webhooks/clerk"
    args = ["send", "--url", url, "--secret", new_secret(), "user.created"]
    assert f"cannot reach {url}" in _one_error_line(CliRunner().invoke(cli, args))


def test_send_and_stats_without_a_store_are_one_error_line_each(tmp_path: Path) -> None:
    runner, missing = CliRunner(env=dict.fromkeys(SETTINGS_ENV)), str(tmp_path / "audit.db")
    assert "no store at" in _one_error_line(runner.invoke(cli, ["stats", "--db", missing]))
    sent = runner.invoke(cli, ["send", "--db", missing, "user.created"])
    assert "no signing secret" in _one_error_line(sent)


@pytest.mark.parametrize("command", ["serve", "rebuild", "send", "stats", "datasette"])
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    assert f"clerk-audit {command}" in result.output.split("Example", 1)[1]
