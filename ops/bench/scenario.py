"""The shape every scenario's result takes in latest.json."""

from __future__ import annotations

import math
from typing import Any

from ops.bench.harness import Sample
from ops.bench.stats import median


def result(
    *,
    fleetline: dict[str, Any],
    baseline: dict[str, Any],
    ratio: float | dict[str, Any] | None,
    target: str,
    target_met: bool | None,
    headline: dict[str, str],
    samples: dict[str, list[Sample]] | None = None,
    notes: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One scenario: both sides' summaries, the ratio, the target and whether it was met.

    `headline` holds the short strings of the markdown table (fleetline, baseline, ratio).
    """
    kept = [s for name, v in (samples or {}).items() if "~" not in name for s in v]
    return {
        "noisy_samples": sum(1 for s in kept if s.get("noisy")),
        "rejected_samples": sum(len(v) for k, v in (samples or {}).items() if "~" in k),
        "fleetline": fleetline,
        "baseline": baseline,
        "ratio": _clean(ratio),
        "target": target,
        "target_met": target_met,
        "headline": headline,
        "samples": samples or {},
        "notes": notes or [],
        **extra,
    }


def med(samples: list[Sample], key: str, digits: int = 3) -> float | None:
    values = [float(s[key]) for s in samples if s.get(key) is not None]
    value = median(values)
    return None if math.isnan(value) else round(value, digits)


def per_job_ms(samples: list[Sample], key: str) -> float | None:
    """Median of `key` (seconds per run) divided by the run's jobs, in milliseconds."""
    values = [float(s[key]) / s["jobs"] * 1000 for s in samples if s.get("jobs")]
    value = median(values)
    return None if math.isnan(value) else round(value, 3)


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value
