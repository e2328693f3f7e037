"""The README's commands work: every command and make target it names exists, every setting it
documents is read by the code, and ``make serve`` really serves."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from eventstore.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CODE = "\n".join(p.read_text() for p in (ROOT / "eventstore").rglob("*.py"))
CLI = Path(sys.executable).with_name("clerk-audit")


def _blocks() -> str:
    return "\n".join(re.findall(r"```bash\n(.*?)```", README, re.S))


def test_every_documented_command_exists() -> None:
    named = set(re.findall(r"clerk-audit (\w+)", _blocks()))
    assert named, "the README shows no clerk-audit command"
    assert named <= set(COMMANDS)


def test_every_documented_make_target_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z]+):", makefile, re.M))
    named = set(re.findall(r"\bmake (\w+)", README))
    assert {"serve", "test"} <= named <= targets


def test_every_documented_setting_is_read_by_the_code() -> None:
    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"`((?:CLERK_)[A-Z_]+)`", table))
    assert {"CLERK_AUDIT_DB", "CLERK_WEBHOOK_SIGNING_SECRET", "CLERK_AUDIT_MAX_BODY_BYTES"} <= names
    assert [name for name in names if f'"{name}"' not in CODE] == []


@pytest.mark.slow
def test_make_serve_serves_and_send_stores(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    env = {k: v for k, v in os.environ.items() if k != "CLERK_WEBHOOK_SIGNING_SECRET"}
    env |= {"CLERK_AUDIT_DB": str(db), "SERVE_ARGS": "--port 0"}
    make = subprocess.Popen(
        ["make", "--no-print-directory", "serve"], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        url = _wait_for_url(make)
        sent = subprocess.run(
            [str(CLI), "send", "--url", f"{url}/webhooks/clerk", "--db", str(db), "user.created"],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert '"status":"stored"' in sent.stdout
        assert (tmp_path / "dev-signing-secret").stat().st_mode & 0o777 == 0o600
    finally:
        os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=30)
        assert make.stdout is not None
        make.stdout.close()


def _wait_for_url(make: subprocess.Popen[str]) -> str:
    """The URL uvicorn says it is running on (read from the output, which is drained to the
    end so the server never blocks on a full pipe)."""
    found: list[str] = []
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert make.stdout is not None
        for line in make.stdout:
            lines.append(line)
            match = re.search(r"Uvicorn running on (http://\S+)", line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(timeout=60)
    assert found, "".join(lines)
    return found[0]
