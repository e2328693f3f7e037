"""Signing secrets against a real server: rotation, strict checking at start-up, and the secret
never showing in a log line, an error line or a response body."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.ingest import user_created
from tests.support.server import SECRET_ENV, Server, running_server, serve_command
from tests.support.signing import new_event_id, new_secret, signed_headers
from tests.support.startup import Run, error_line, run_all

OLD, NEW, NEWEST = new_secret(), new_secret(), new_secret()


@pytest.fixture(scope="module")
def rotating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server configured with several secrets, as during a rotation, separated by a space and
    by a comma."""
    path = tmp_path_factory.mktemp("rotation") / "audit.db"
    with running_server(path, f"{OLD} {NEW},{NEWEST}") as server:
        yield server


@pytest.mark.parametrize("secret", [OLD, NEW, NEWEST], ids=["first", "after-space", "after-comma"])
def test_during_a_rotation_either_secret_is_accepted(rotating: Server, secret: str) -> None:
    response = rotating.post(new_event_id(), user_created(), secret=secret)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "stored"


def test_during_a_rotation_a_signature_header_with_both_is_accepted(rotating: Server) -> None:
    event_id, body = new_event_id(), user_created()
    headers = signed_headers(OLD, event_id, body)
    both = f"{headers['svix-signature']} {signed_headers(NEW, event_id, body)['svix-signature']}"
    response = httpx.post(rotating.ingest_url, content=body,
                          headers={**headers, "svix-signature": both}, timeout=30)  # fmt: skip
    assert response.status_code == 200


def test_during_a_rotation_a_third_secret_is_refused(rotating: Server) -> None:
    response = rotating.post(new_event_id(), user_created(), secret=new_secret())
    assert response.status_code == 400
    assert "no matching signature" in response.json()["error"]


VALID = new_secret()
MALFORMED = {
    "not-base64": ("whsec_!!!", "not valid base64"),
    "too-short": ("whsec_c2hvcnQ=", "too short"),
    "quoted": (f'"{VALID}"', "does not start with 'whsec_'"),
    "second-of-two-bad": (f"{VALID},whsec_!!!{VALID[6:]}", "secret 2 of"),
    "empty": ("  ", "set but empty"),
}


@pytest.fixture(scope="module")
def malformed_starts(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """``clerk-audit serve`` started once with each malformed secret (all at once)."""
    folders = {case: tmp_path_factory.mktemp(case) for case in MALFORMED}
    runs = {case: Run(serve_command(folders[case] / "audit.db"),
                      {**os.environ, SECRET_ENV: value})
            for case, (value, _) in MALFORMED.items()}  # fmt: skip
    return {case: (done, folders[case]) for case, done in run_all(runs).items()}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_secret_stops_start_up_with_one_line_that_does_not_show_it(
    malformed_starts: dict[str, tuple[subprocess.CompletedProcess[str], Path]], case: str
) -> None:
    value, message = MALFORMED[case]
    done, folder = malformed_starts[case]
    line = error_line(done)
    assert message in line and SECRET_ENV in line
    for part in {value.strip(), *value.replace(",", " ").split(), VALID, VALID[6:]} - {""}:
        assert part not in done.stdout + done.stderr
    assert list(folder.iterdir()) == []


def test_the_secret_never_shows_in_the_log_or_a_response(tmp_path: Path) -> None:
    secret = new_secret()
    answers: list[str] = []
    debug = ("--log-level", "debug")
    with (
        running_server(tmp_path / "audit.db", secret, extra=debug) as server,
        httpx.Client(timeout=30) as client,
    ):
        event_id, body = new_event_id(), user_created()
        for secret_used, sent in [(secret, body), (secret, body), (secret, body + b" "),
                                      (new_secret(), body), (secret, b"not json")]:  # fmt: skip
            answers.append(server.post(event_id, sent, client=client, secret=secret_used).text)
        headers = signed_headers(secret, new_event_id(), body)
        for spoilt in ({**headers, "svix-signature": "v1,abcde"}, {"svix-id": "msg_1"}):
            answers.append(client.post(server.ingest_url, content=body, headers=spoilt).text)
        answers.append(client.get(f"{server.url}/healthz").text)
    assert "delivery stored" in server.log and "delivery rejected" in server.log
    assert "delivery conflict" in server.log
    for text in [server.log, *answers]:
        assert secret not in text
        assert secret.removeprefix("whsec_") not in text
