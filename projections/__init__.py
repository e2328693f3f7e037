"""clerk-audit's projections: current state and the audit timeline, derived from the log alone
and kept in a file of their own by the projector."""

from projections.digest import state_digest, table_digests
from projections.projector import Projector
from projections.rebuild import RebuildResult, ensure_current, rebuild
from projections.schema import PROJECTION_TABLES, TIMELINE

__all__ = [
    "PROJECTION_TABLES",
    "TIMELINE",
    "Projector",
    "RebuildResult",
    "ensure_current",
    "rebuild",
    "state_digest",
    "table_digests",
]
