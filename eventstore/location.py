"""Where the log is: a SQLite file, or a PostgreSQL database (``--db`` / ``CLERK_AUDIT_DB``).

A value starting ``postgresql://`` (or ``postgres://``) is a PostgreSQL log
(``eventstore.pg``); anything else is the path of a SQLite file (``eventstore.db``). This is the
one place that tells them apart. A PostgreSQL URL may hold a password: it is never printed
(:attr:`PostgresLog.display`), and child processes get it through the environment, not their
command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from eventstore.sql import Sql

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
DB_ENV = "CLERK_AUDIT_DB"


@dataclass(frozen=True, slots=True)
class PostgresLog:
    """A log in PostgreSQL, by its connection URL (libpq's, password included)."""

    url: str = field(repr=False)

    @property
    def display(self) -> str:
        """The URL without its password, for messages and logs."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))

    def __str__(self) -> str:
        return self.display


LogLocation = Path | PostgresLog
"""Either kind of log."""


def parse_location(text: str | Path) -> LogLocation:
    """The log named by ``text``: a :class:`PostgresLog` for a ``postgresql://`` URL, else a
    SQLite path."""
    if isinstance(text, str) and text.strip().startswith(POSTGRES_SCHEMES):
        return PostgresLog(text.strip())
    return Path(text)


def location_text(location: LogLocation) -> str:
    """The text that :func:`parse_location` reads back as ``location``: a path, or the whole
    URL, password included (for a child's environment, never for messages: see ``display``)."""
    return location.url if isinstance(location, PostgresLog) else str(location)


def open_log_reader(location: LogLocation) -> Sql:
    """A read-only view of the log for followers (the projector): autocommit, one snapshot
    per statement. SQLite errors are raised as ``sqlite3`` errors, PostgreSQL ones as our own
    :class:`~eventstore.errors.StoreError`."""
    if isinstance(location, PostgresLog):
        from eventstore.pg.connect import open_reader as open_pg_reader

        return open_pg_reader(location)
    from eventstore.db import open_reader

    return open_reader(location)
