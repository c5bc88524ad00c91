"""Crashes: a subtask whose deliveries keep killing their process is poison.

Each delivery marks itself in flight before the call (its own member of a set, so a
guard round trip run again after a Redis timeout marks it once) and clears the marks
after; marks left behind count deliveries that died mid-run (pool child or whole worker
SIGKILLed).
Past the limit the subtask is dead-lettered and ends `failed`, so the chord, and every
other job, goes on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from fleetline.shared import keys
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import OutcomeStatus, SubtaskOutcome
from fleetline.workers.guards.base import Check

if TYPE_CHECKING:
    from fleetline.workers.run import SubtaskRun

log = logging.getLogger(__name__)


class CrashGuard:
    per_model = False

    def before(self, run: SubtaskRun, trip: RoundTrip) -> Check:
        key = keys.inflight(run.payload.job_id, run.payload.subtask.id)
        trip.queue("SADD", key, run.delivery)
        trip.queue("EXPIRE", key, keys.INFLIGHT_TTL_S)
        index = trip.queue("SCARD", key)
        limit = run.runtime.settings.celery.poison_after_crashes

        def check(replies: list[Any]) -> SubtaskOutcome | None:
            crashes = int(replies[index]) - 1
            if crashes < limit:
                return None
            reason = f"{crashes} deliveries died mid-run"
            log.error("subtask %s is poison: %s", run.payload.subtask.id, reason)
            run.runtime.dead_letters.add(
                reason="poison",
                detail=reason,
                queue=run.payload.subtask.worker_type,
                task=run.task_name,
                task_id=run.task_id,
                message={"args": [run.payload.model_dump(mode="json")]},
            )
            return run.outcome(OutcomeStatus.FAILED, "poison", reason)

        return check

    def after(self, run: SubtaskRun, outcome: SubtaskOutcome | None, trip: RoundTrip) -> None:
        trip.queue("DEL", keys.inflight(run.payload.job_id, run.payload.subtask.id))
