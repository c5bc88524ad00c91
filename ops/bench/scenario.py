"""The shape every scenario's result takes in latest.json."""

from __future__ import annotations

import math
from typing import Any

from ops.bench.harness import Sample
from ops.bench.stats import median, ratio, spread


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


def per_step_ms(samples: list[Sample], key: str) -> float | None:
    """Median of `key` (seconds per run) divided by the run's steps (every subtask and each
    job's callback), in milliseconds."""
    values = [float(s[key]) / s["steps"] * 1000 for s in samples if s.get("steps")]
    value = median(values)
    return None if math.isnan(value) else round(value, 4)


def pairwise(
    a: list[Sample], b: list[Sample], key: str, scale: str | None = None
) -> dict[str, float | int | None]:
    """The ratios A_i / B_i of the samples of the same repetition (robust to drift across
    the run): their median, lowest, highest and count. With `scale`, each value is divided
    by its sample's `scale` field first (per step, per job)."""

    def value(s: Sample) -> float:
        return float(s[key]) / float(s[scale]) if scale else float(s[key])

    return spread([ratio(value(x), value(y)) for x, y in zip(a, b, strict=False)])


def ratio_text(r: dict[str, float | int | None]) -> str:
    """A pairwise ratio for the table: `1.02x (0.95-1.10, n=5)`."""
    if r["median"] is None:
        return "n/a"
    return f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f}, n={r['n']})"
