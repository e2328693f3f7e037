"""Figures: a measured quantity with all its runs, reported by its median."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


def percentile(ordered: Sequence[float], percent: float) -> float:
    """The nearest-rank ``percent`` percentile of an already sorted sequence (0 if empty)."""
    if not ordered:
        return 0.0
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return float(ordered[rank - 1])


@dataclass(slots=True)
class Figure:
    """One measured quantity: every run's value, reported as their median."""

    label: str
    unit: str
    runs: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else math.nan

    def add(self, value: float) -> None:
        self.runs.append(value)


@dataclass(slots=True)
class Section:
    """The figures of one part of the benchmark, by key, with notes on how they were made."""

    title: str
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def figure(self, key: str, label: str, unit: str) -> Figure:
        """The figure ``key``, created empty on first use."""
        return self.figures.setdefault(key, Figure(label, unit))


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when either is unknown or the denominator is 0."""
    if not denominator or math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    return numerator / denominator
