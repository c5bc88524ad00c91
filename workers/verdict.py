"""How a job ends, from the outcomes it has: a pure function, shared by synthesis and watchdog."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from fleetline.shared.names import WorkerType
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


_SOURCE_TAG = re.compile(r"^\[[\w.-]+\]\s*")


def findings_text(outcomes: Iterable[SubtaskOutcome]) -> str:
    """The usable outputs as plain sentences, each once, for the synthesis model to read."""
    lines: list[str] = []
    topics: Counter[str] = Counter()
    for o in outcomes:
        if o.status is not OutcomeStatus.OK or not o.output:
            continue
        out = o.output
        if o.worker_type is WorkerType.ANALYSIS:
            # Analysis reads documents tagged "[id] ..."; the tag is not part of a finding.
            lines.extend(_SOURCE_TAG.sub("", str(f)) for f in out.get("findings", []))
        elif o.worker_type is WorkerType.EXTRACTION:
            lines.append(str(out.get("gist", "")))
        elif o.worker_type is WorkerType.CLASSIFICATION:
            topics[str(out.get("label"))] += 1
    if topics:
        lines.append(
            "Topics covered: "
            + ", ".join(f"{label} ({n})" for label, n in topics.most_common())
            + "."
        )
    return "\n".join(dict.fromkeys(line.strip() for line in lines if line.strip()))


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
