"""clerk-audit's projections: current state and the audit timeline, derived from the log alone."""

from projections.apply import project
from projections.digest import state_digest, table_digests
from projections.rebuild import RebuildResult, ensure_current, rebuild
from projections.schema import PROJECTION_TABLES, TIMELINE

__all__ = [
    "PROJECTION_TABLES",
    "TIMELINE",
    "RebuildResult",
    "ensure_current",
    "project",
    "rebuild",
    "state_digest",
    "table_digests",
]
