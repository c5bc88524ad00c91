"""How a job ends, from the outcomes it has: pure functions, shared by fan-in and watchdog."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from fleetline.shared.schemas import JobStatus, OutcomeStatus, SubtaskOutcome


def judge(outcomes: Iterable[SubtaskOutcome], expected: int) -> tuple[JobStatus, float]:
    """Status and completeness: failed when nothing usable came back or a critical part
    failed, killed when a spend kill switch stopped every part."""
    seen = list(outcomes)
    usable = [o for o in seen if o.status is OutcomeStatus.OK]
    completeness = round(len(usable) / expected, 4) if expected else 0.0
    critical_failed = any(o.critical and o.status is not OutcomeStatus.OK for o in seen)
    if not usable and seen and all(o.status is OutcomeStatus.KILLED for o in seen):
        return JobStatus.KILLED, completeness
    if not usable or critical_failed:
        return JobStatus.FAILED, completeness
    if len(usable) < expected:
        return JobStatus.DEGRADED, completeness
    return JobStatus.SUCCEEDED, 1.0


def usable(outcomes: Iterable[SubtaskOutcome]) -> list[SubtaskOutcome]:
    """The outcomes whose output a job may use."""
    return [o for o in outcomes if o.status is OutcomeStatus.OK and o.output is not None]


def listed_outputs(outcomes: list[SubtaskOutcome]) -> str:
    """The default text of a fan-out's then-step: each usable output, one line each."""
    return "\n".join(
        f"[{o.subtask_id}] {json.dumps(o.output, ensure_ascii=False, sort_keys=True)}"
        for o in usable(outcomes)
    )


def outputs_by_step(outcomes: list[SubtaskOutcome]) -> dict[str, Any]:
    """The default structured part of a result: each usable output by step id."""
    return {"outputs": {o.subtask_id: o.output for o in usable(outcomes)}}


def assemble(
    outcomes: Iterable[SubtaskOutcome],
    expected_ids: list[str],
    collect: Callable[[list[SubtaskOutcome]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The part of a result built without any model: the job's `collect` of its outcomes,
    then which steps are missing and which unusable.

    `missing` lists the expected steps with no outcome at all (the watchdog's case),
    `unusable` those whose outcome was not ok.
    """
    seen = {o.subtask_id: o for o in outcomes}
    result = (collect or outputs_by_step)(list(seen.values()))
    order = expected_ids or list(seen)
    result["missing"] = [sid for sid in expected_ids if sid not in seen]
    result["unusable"] = [
        sid for sid in order if sid in seen and seen[sid].status is not OutcomeStatus.OK
    ]
    return result
