"""Cancelled: a step of a cancelled job that has not started ends `skipped`, calling no one.

The job's status is read in the guards' one round trip; a step already past its guards
when the job is cancelled finishes its call, and its outcome is recorded but not used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fleetline.shared import keys
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import JobStatus, OutcomeStatus, SubtaskOutcome
from fleetline.workers.guards.base import Check

if TYPE_CHECKING:
    from fleetline.workers.run import SubtaskRun


class CancelledGuard:
    per_model = False

    def before(self, run: SubtaskRun, trip: RoundTrip) -> Check:
        index = trip.queue("HGET", keys.job(run.payload.job_id), "status")

        def check(replies: list[Any]) -> SubtaskOutcome | None:
            status = replies[index]
            if status is None or _text(status) != JobStatus.CANCELLED.value:
                return None
            return run.outcome(OutcomeStatus.SKIPPED, "cancelled", "the job was cancelled")

        return check

    def after(self, run: SubtaskRun, outcome: SubtaskOutcome | None, trip: RoundTrip) -> None:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
