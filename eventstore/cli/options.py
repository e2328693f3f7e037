"""Options shared by several ``clerk-audit`` commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

DEFAULT_DB = Path("data/audit.db")

F = TypeVar("F", bound=Callable[..., Any])


def db_option(function: F) -> F:
    """``--db PATH`` (env ``CLERK_AUDIT_DB``, default ``data/audit.db``)."""
    return click.option(
        "--db",
        "db_path",
        type=click.Path(path_type=Path, dir_okay=False),
        envvar="CLERK_AUDIT_DB",
        default=DEFAULT_DB,
        show_default=True,
        help="The SQLite store (env CLERK_AUDIT_DB).",
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
