from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from eventstore.db import open_store
from eventstore.engine import sqlite3
from eventstore.location import PostgresLog
from tests.support.postgres import PostgresServer, postgres_or_skip
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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (skipped, with the reason, where none can
    be started); each test takes a database of its own (:func:`pg_log`)."""
    with postgres_or_skip() as server:
        yield server


@pytest.fixture
def pg_log(postgres_server: PostgresServer) -> PostgresLog:
    """A fresh, empty PostgreSQL database for one test's log."""
    return postgres_server.new_database()
