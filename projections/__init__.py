"""Replayable projections of the clerk-audit log (built under issue 3)."""
