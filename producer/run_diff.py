"""`fleetline diff JOB`: a pipeline's latest run next to the run before it, stage by stage.

Pure functions of the job's result (its stage tables, current and earlier) and its
recorded outcomes: for each stage, who ran it on which model, what it cost and what it
answered, in both runs; a stage the later run kept from the earlier one shows once.
"""

from __future__ import annotations

from typing import Any

from fleetline.shared.errors import NotResumable
from fleetline.shared.schemas import JobResult


def run_diff(job: JobResult) -> dict[str, Any]:
    """The latest run of a pipeline job against the one before it.

    Raises:
        NotResumable: the job is not a pipeline, or has run only once.
    """
    result = job.result or {}
    current = result.get("stages")
    earlier = result.get("runs") or []
    if not current:
        raise NotResumable(f"job {job.job_id} is not a pipeline: it has no stages to compare")
    if not earlier:
        raise NotResumable(f"job {job.job_id} has run once: resume it to have a run to compare")
    previous = earlier[-1]
    outputs = {o.subtask_id: o for o in job.subtasks}

    def side(entry: dict[str, Any]) -> dict[str, Any]:
        found = outputs.get(entry["step_id"])
        return {
            "run": entry["run"],
            "step_id": entry["step_id"],
            "status": entry["status"],
            "model": entry.get("model"),
            "attempts": entry["attempts"],
            "cost_usd": entry["cost_usd"],
            "output": found.output if found is not None else None,
        }

    rows = []
    for before, after in zip(previous["stages"], current, strict=True):
        rows.append(
            {
                "name": after["name"],
                "agent": after["agent"],
                "rerun": before["step_id"] != after["step_id"],
                "before": side(before),
                "after": side(after),
            }
        )
    return {
        "job_id": job.job_id,
        "runs": [previous["run"], result.get("run")],
        "status": [previous["status"], job.status.value],
        "cost_usd": [
            round(sum(r["before"]["cost_usd"] for r in rows), 9),
            round(sum(r["after"]["cost_usd"] for r in rows), 9),
        ],
        "stages": rows,
    }
