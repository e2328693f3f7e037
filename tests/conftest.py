from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstore.db import open_store
from tests.support.server import Server, running_server
from tests.support.signing import new_secret


def pytest_report_header() -> str:
    return f"sqlite {sqlite3.sqlite_version}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where a test's store lives (a fresh temporary folder)."""
    return tmp_path / "audit.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[sqlite3.Connection]:
    """A freshly created, migrated store on disk (WAL mode)."""
    conn = open_store(db_path, create=True)
    yield conn
    conn.close()


@pytest.fixture
def secret() -> str:
    """A throwaway signing secret for one test."""
    return new_secret()


@pytest.fixture
def server(db_path: Path, secret: str) -> Iterator[Server]:
    """A real ``clerk-audit serve`` on a free loopback port, with a fresh store."""
    with running_server(db_path, secret) as running:
        yield running
