"""The deadline watchdog: a job whose deadline passed is finalised with what it has.

The chord callback that arrives later finds the job final and changes nothing, so the
caller gets an answer on time even when a queue is backed up or a provider stalls.
"""

from __future__ import annotations

import json
import logging

from fleetline.shared.errors import JobNotFound
from fleetline.shared.fleet import FleetDefinition
from fleetline.shared.schemas import JobStatus
from fleetline.shared.state import StateStore
from fleetline.shared.verdict import assemble, judge

log = logging.getLogger(__name__)

ACTOR = "watchdog"


def finalise_overdue(
    store: StateStore, fleet: FleetDefinition, now: float, grace_s: float = 0.0
) -> list[str]:
    """Finalise every job whose deadline (plus grace) has passed; return their ids.

    A job's result is assembled with its kind's `collect` (from `fleet`).
    """
    finalised = []
    for job_id in store.overdue(now - grace_s):
        try:
            record = store.raw(job_id)
        except JobNotFound:
            store.forget_deadline(job_id)
            continue
        expected = json.loads(record.get("subtask_ids", "[]"))
        wanted = set(expected)
        outcomes = [o for sid, o in store.outcomes(job_id).items() if sid in wanted]
        status, completeness = judge(outcomes, len(expected))
        if not outcomes:
            status = JobStatus.TIMED_OUT
        elif status is JobStatus.SUCCEEDED:
            # Every step answered, but the then-step never did: not a full success.
            status = JobStatus.DEGRADED
        job = fleet.jobs.get(record.get("kind", ""))
        result = {**assemble(outcomes, expected, job.collect if job else None), "answer": None}
        if store.finalize(job_id, status, completeness, result, ACTOR, reason="deadline"):
            log.warning(
                "job %s finalised at its deadline: %s, %d of %d subtasks",
                job_id,
                status.value,
                len(outcomes),
                len(expected),
            )
            finalised.append(job_id)
    return finalised
