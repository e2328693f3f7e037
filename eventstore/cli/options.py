"""Options shared by several ``clerk-audit`` commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from eventstore.location import DB_ENV, LogLocation, PostgresLog, parse_location

DEFAULT_DB = Path("data/audit.db")

F = TypeVar("F", bound=Callable[..., Any])


def _sqlite_only(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    """Refuse a PostgreSQL URL where a command reads the SQLite file itself."""
    if isinstance(parse_location(str(value).replace(":/", "://", 1)), PostgresLog):
        raise click.BadParameter(
            f"`clerk-audit {ctx.info_name}` works on a SQLite log only (for now)", ctx, param
        )
    return value


def db_option(function: F) -> F:
    """``--db PATH`` (env ``CLERK_AUDIT_DB``, default ``data/audit.db``): a SQLite log."""
    return click.option(
        "--db",
        "db_path",
        type=click.Path(path_type=Path, dir_okay=False),
        envvar=DB_ENV,
        default=DEFAULT_DB,
        show_default=True,
        callback=_sqlite_only,
        help="The SQLite store (env CLERK_AUDIT_DB).",
    )(function)


def _location(ctx: click.Context, param: click.Parameter, value: str) -> LogLocation:
    return parse_location(value)


def log_option(function: F) -> F:
    """``--db PATH|URL`` (env ``CLERK_AUDIT_DB``, default ``data/audit.db``): a SQLite file or
    a ``postgresql://`` URL (``eventstore.location``)."""
    return click.option(
        "--db",
        "db_path",
        type=str,
        envvar=DB_ENV,
        default=str(DEFAULT_DB),
        show_default=True,
        callback=_location,
        help="The log: a SQLite file, or a postgresql:// URL (env CLERK_AUDIT_DB; prefer the "
        "environment for a URL with a password).",
    )(function)


def projections_option(function: F) -> F:
    """``--projections-db PATH`` (env ``CLERK_AUDIT_PROJECTIONS_DB``; default beside the log,
    see ``eventstore.paths``)."""
    return click.option(
        "--projections-db",
        "projections_db",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="The projections file (env CLERK_AUDIT_PROJECTIONS_DB; default: the log's name "
        "with .projections before the suffix).",
    )(function)
