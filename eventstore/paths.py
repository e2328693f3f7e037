"""Where a store's two files are: the log (``--db``) and its projections file (CONTRACT §2).

The projections file defaults to the log's name with ``.projections`` before the suffix
(``data/audit.db`` -> ``data/audit.projections.db``); ``CLERK_AUDIT_PROJECTIONS_DB`` or
``--projections-db`` name another. Every command finds it by this one rule.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

PROJECTIONS_ENV = "CLERK_AUDIT_PROJECTIONS_DB"


def default_projections_path(db_path: Path) -> Path:
    """``data/audit.db`` -> ``data/audit.projections.db``."""
    suffix = db_path.suffix or ".db"
    return db_path.with_name(f"{db_path.stem if db_path.suffix else db_path.name}"
                             f".projections{suffix}")  # fmt: skip


def projections_path(
    db_path: Path, given: Path | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """The projections file of the log at ``db_path``: ``given`` (``--projections-db``), else
    ``CLERK_AUDIT_PROJECTIONS_DB``, else :func:`default_projections_path`."""
    if given is not None:
        return given
    configured = (os.environ if env is None else env).get(PROJECTIONS_ENV, "").strip()
    return Path(configured) if configured else default_projections_path(db_path)
