"""How a job ends, from the outcomes it has: a pure function, shared by synthesis and watchdog."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.names import WorkerType
from shared.schemas import JobStatus, OutcomeStatus, SubtaskOutcome


def judge(outcomes: Iterable[SubtaskOutcome], expected: int) -> tuple[JobStatus, float]:
    """Status and completeness: failed when nothing usable came back or a critical part failed."""
    seen = list(outcomes)
    usable = [o for o in seen if o.status is OutcomeStatus.OK]
    completeness = round(len(usable) / expected, 4) if expected else 0.0
    critical_failed = any(o.critical and o.status is not OutcomeStatus.OK for o in seen)
    if not usable or critical_failed:
        return JobStatus.FAILED, completeness
    if len(usable) < expected:
        return JobStatus.DEGRADED, completeness
    return JobStatus.SUCCEEDED, 1.0


def findings_text(outcomes: Iterable[SubtaskOutcome]) -> str:
    """The usable outputs as plain sentences, for the synthesis model to read."""
    lines: list[str] = []
    for o in outcomes:
        if o.status is not OutcomeStatus.OK or not o.output:
            continue
        out = o.output
        if o.worker_type is WorkerType.EXTRACTION:
            lines.append(str(out.get("gist", "")))
        elif o.worker_type is WorkerType.CLASSIFICATION:
            lines.append(f"{o.subtask_id} is about {out.get('label')}.")
        elif o.worker_type is WorkerType.ANALYSIS:
            lines.extend(str(f) for f in out.get("findings", []))
    return "\n".join(line for line in lines if line)


def assemble(outcomes: Iterable[SubtaskOutcome], expected_ids: list[str]) -> dict[str, Any]:
    """The structured part of a result, built without any model: what each agent found.

    `missing` lists the expected subtasks with no outcome at all (the watchdog's case),
    `unusable` those whose outcome was not ok.
    """
    seen = {o.subtask_id: o for o in outcomes}
    entities: list[str] = []
    figures: list[str] = []
    labels: dict[str, str] = {}
    findings: list[str] = []
    for o in seen.values():
        if o.status is not OutcomeStatus.OK or not o.output:
            continue
        if o.worker_type is WorkerType.EXTRACTION:
            entities += [e for e in o.output.get("entities", []) if e not in entities]
            figures += [f for f in o.output.get("figures", []) if f not in figures]
        elif o.worker_type is WorkerType.CLASSIFICATION:
            labels[o.subtask_id] = str(o.output.get("label"))
        elif o.worker_type is WorkerType.ANALYSIS:
            findings += [str(f) for f in o.output.get("findings", [])]
    missing = [sid for sid in expected_ids if sid not in seen]
    order = expected_ids or list(seen)
    unusable = [sid for sid in order if sid in seen and seen[sid].status is not OutcomeStatus.OK]
    return {
        "entities": entities[:50],
        "figures": figures[:50],
        "labels": labels,
        "findings": findings[:50],
        "missing": missing,
        "unusable": unusable,
    }
