"""The deadline watchdog: a job whose deadline passed is finalised with what it has.

The chord callback that arrives later finds the job final and changes nothing, so the
caller gets an answer on time even when a queue is backed up or a provider stalls.
Every worker runs it on a timer (one of them per interval, by a turn in Redis), and beat
sends it too: a crashed beat, whose successor waits up to 30 s for RedBeat's lock, never
pauses it.
"""

from __future__ import annotations

import json
import logging

import redis

from fleetline.shared import keys
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


def reap_in_turn(
    client: redis.Redis,
    store: StateStore,
    fleet: FleetDefinition,
    now: float,
    grace_s: float,
    interval_s: float,
) -> list[str] | None:
    """Finalise the overdue jobs when nobody in the fleet has this interval; None when
    someone has (their sweep covers the same jobs)."""
    # Just under the interval: the next interval's first caller always gets its turn.
    turn_ms = max(1, int(interval_s * 900))
    if not client.set(keys.watchdog_turn(), "1", nx=True, px=turn_ms):
        return None
    return finalise_overdue(store, fleet, now, grace_s)
