"""The targets of issues 12, 14, 15 and 16, evaluated on the medians of one invocation."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from bench.stats import Section, ratio

Sections = dict[str, Section]


@dataclass(frozen=True, slots=True)
class Target:
    """One requirement and what was measured for it."""

    label: str
    value: float
    """The measured value (a ratio, ms, MB, ...); NaN when it could not be measured."""
    threshold: float
    compare: str
    """``>=``, ``<``, ``<=`` or ``==``."""
    unit: str
    why_missing: str = ""

    @property
    def verdict(self) -> str:
        if math.isnan(self.value):
            return "FAIL" if self.why_missing else "n/a"
        test: Callable[[float, float], bool] = {
            ">=": operator.ge,
            "<": operator.lt,
            "<=": operator.le,
            "==": operator.eq,
        }[self.compare]
        return "PASS" if test(self.value, self.threshold) else "FAIL"


def _median(sections: Sections, section: str, key: str) -> float:
    figure = sections[section].figures.get(key) if section in sections else None
    return figure.median if figure else math.nan


def _missing(sections: Sections, *names: str) -> str:
    """Why a figure of these sections is missing, if one of them says (empty if not run)."""
    notes = [note for name in names if name in sections for note in sections[name].notes]
    failures = [n for n in notes if "exited" in n or "did not finish" in n or "failed" in n]
    return "; ".join(dict.fromkeys(failure.split(",")[0] for failure in failures))


def _failures(sections: Sections) -> float:
    figure = (
        sections["ingest"].figures.get("clerk-audit.failures") if "ingest" in sections else None
    )
    return sum(figure.runs) if figure else math.nan


def evaluate(sections: Sections) -> list[Target]:
    """Every target, in the issue's order."""
    m = partial(_median, sections)
    ingest, rebuild = _missing(sections, "ingest"), _missing(sections, "rebuild")
    ingest_peer, rebuild_peer = (
        _missing(sections, "ingest", "peer"),
        _missing(sections, "rebuild", "peer"),
    )
    disk = _missing(sections, "disk")
    return [
        Target("ingest ≥ 2 x naive per-request commit", m("ingest", "ratio.naive"), 2.0, ">=",
               "x", ingest),
        Target("ingest ≥ 0.30 x bare-HTTP ceiling", m("ingest", "ratio.bare"), 0.30, ">=", "x",
               ingest),
        Target("ingest p99 < 25 ms at 32 connections", m("ingest", "clerk-audit.p99_ms"), 25.0,
               "<", "ms", ingest),
        Target("ingest: zero non-2xx (all runs)", _failures(sections), 0, "==", "", ingest),
        Target("ingest ≥ 2 x eventsourcing durable appends",
               ratio(m("ingest", "clerk-audit.stored_per_s"), m("peer", "append_per_s")), 2.0,
               ">=", "x", ingest_peer),
        Target("projections catch up < 1 s after the load",
               m("ingest", "clerk-audit.catch_up_s"), 1.0, "<", "s", ingest),
        Target("rebuild ≥ 50,000 events/s", m("rebuild", "rebuild.events_per_s"), 50_000,
               ">=", "events/s", rebuild),
        Target("rebuild peak RSS < 500 MB (all processes)", m("rebuild", "rebuild.peak_rss_mb"),
               500, "<", "MB", rebuild),
        Target("rebuild ≥ 0.5 x parsing ceiling", m("rebuild", "ratio.scan"), 0.5, ">=", "x",
               rebuild),
        Target("rebuild ≥ 1.5 x eventsourcing read-back",
               ratio(m("rebuild", "rebuild.events_per_s"), m("peer", "read_per_s")), 1.5, ">=",
               "x", rebuild_peer),
        Target("log on disk ≤ 1.3 x body bytes", m("disk", "log.per_body_byte"), 1.3, "<=", "x",
               disk),
        *_integrity(sections, m),
        *_postgres(sections, m),
        *_consumers(sections, m),
    ]  # fmt: skip


def _integrity(sections: Sections, m: Callable[[str, str], float]) -> list[Target]:
    """Issue 14's targets; the chain's share of ingest CPU per request needs both sections."""
    integrity = _missing(sections, "integrity")
    ingest_cpu = m("ingest", "clerk-audit.server_main_cpu") + m(
        "ingest", "clerk-audit.server_writer_cpu"
    )
    cpu_us = ratio(ingest_cpu * 1e6, m("ingest", "clerk-audit.requests_per_s"))
    return [
        Target("chain ≤ 5% of ingest CPU per request", ratio(m("integrity", "chain.link_us"),
               cpu_us), 0.05, "<=", "x", _missing(sections, "integrity", "ingest")),
        Target("verify ≥ 200,000 events/s (1M log)", m("integrity", "verify.events_per_s"),
               200_000, ">=", "events/s", integrity),
        Target("verify ≥ 0.5 x bare SHA-256 pass", m("integrity", "verify.ratio"), 0.5, ">=",
               "x", integrity),
        Target("redact a user with 1,000 events < 1 s (1M log)", m("integrity", "redact.seconds"),
               1.0, "<", "s", integrity),
    ]  # fmt: skip


def _consumers(sections: Sections, m: Callable[[str, str], float]) -> list[Target]:
    """Issue 15's targets (labels that start with neither ``ingest`` nor ``rebuild``: no
    profile of those parts explains them)."""
    missing = _missing(sections, "consumers")
    return [
        Target("feed ≥ 50,000 events/s to one reader", m("consumers", "feed.events_per_s"),
               50_000, ">=", "events/s", missing),
        Target("export ≥ 50,000 events/s (1M log)", m("consumers", "export.events_per_s"),
               50_000, ">=", "events/s", missing),
        Target("import ≥ 50,000 events/s (1M log)", m("consumers", "import.events_per_s"),
               50_000, ">=", "events/s", missing),
        Target("feed readers slow ingest ≤ 10% (32 connections)",
               m("consumers", "ingest.readers_ratio"), 0.90, ">=", "x", missing),
    ]  # fmt: skip


def _postgres(sections: Sections, m: Callable[[str, str], float]) -> list[Target]:
    """Issue 16's targets (``bench.postgres``)."""
    why = _missing(sections, "postgres")
    return [
        Target("PostgreSQL ingest, 1 server ≥ 2 x naive-pg", m("postgres",
               "pg.ratio.clerk-audit x1"), 2.0, ">=", "x", why),
        Target("PostgreSQL ingest, 2 servers ≥ 2 x naive-pg", m("postgres",
               "pg.ratio.clerk-audit x2"), 2.0, ">=", "x", why),
        Target("PostgreSQL ingest p99 < 25 ms (1 server)", m("postgres",
               "pg.clerk-audit x1.p99_ms"), 25.0, "<", "ms", why),
        Target("PostgreSQL ingest p99 < 25 ms (2 servers)", m("postgres",
               "pg.clerk-audit x2.p99_ms"), 25.0, "<", "ms", why),
        Target("projector following a PostgreSQL log ≥ 20,000 events/s", m("postgres",
               "pg.projector.postgresql"), 20_000, ">=", "events/s", why),
    ]  # fmt: skip
