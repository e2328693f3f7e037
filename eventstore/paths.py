"""Where a store's two files are: the log (``--db``) and its projections file (CONTRACT §2).

The projections file defaults to the log's name with ``.projections`` before the suffix
(``data/audit.db`` -> ``data/audit.projections.db``); ``CLERK_AUDIT_PROJECTIONS_DB`` or
``--projections-db`` name another. Every command finds it by this one rule.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from eventstore.location import LogLocation, PostgresLog

PROJECTIONS_ENV = "CLERK_AUDIT_PROJECTIONS_DB"
POSTGRES_DEFAULT_PROJECTIONS = Path("data/audit.projections.db")
"""The projections file of a PostgreSQL log unless told otherwise (always an SQLite file)."""


def default_projections_path(db_path: Path) -> Path:
    """``data/audit.db`` -> ``data/audit.projections.db``."""
    suffix = db_path.suffix or ".db"
    return db_path.with_name(f"{db_path.stem if db_path.suffix else db_path.name}"
                             f".projections{suffix}")  # fmt: skip


def projections_path(
    db_path: LogLocation, given: Path | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """The projections file of the log at ``db_path``: ``given`` (``--projections-db``), else
    ``CLERK_AUDIT_PROJECTIONS_DB``, else :func:`default_projections_path` (for a PostgreSQL
    log, :data:`POSTGRES_DEFAULT_PROJECTIONS`)."""
    if given is not None:
        return given
    configured = (os.environ if env is None else env).get(PROJECTIONS_ENV, "").strip()
    if configured:
        return Path(configured)
    if isinstance(db_path, PostgresLog):
        return POSTGRES_DEFAULT_PROJECTIONS
    return default_projections_path(db_path)
