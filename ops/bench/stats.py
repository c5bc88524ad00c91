"""Small statistics: medians, percentiles and quartile medians of samples."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def quartile_medians(values: Sequence[float]) -> tuple[float, float]:
    """Median of the first quarter and of the last quarter of a time series."""
    if len(values) < 4:
        return (values[0], values[-1]) if values else (math.nan, math.nan)
    quarter = len(values) // 4
    return median(values[:quarter]), median(values[-quarter:])


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


def rounded(value: float, digits: int = 3) -> float | None:
    """JSON-friendly: NaN becomes null."""
    return None if math.isnan(value) else round(value, digits)


def spread(values: Sequence[float]) -> dict[str, float | int | None]:
    """Median, lowest and highest of some ratios (NaN left out), and how many there were."""
    kept = [v for v in values if not math.isnan(v)]
    return {
        "median": rounded(median(kept), 4),
        "min": rounded(min(kept), 4) if kept else None,
        "max": rounded(max(kept), 4) if kept else None,
        "n": len(kept),
    }
