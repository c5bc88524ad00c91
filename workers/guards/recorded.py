"""Recorded: a step whose outcome is already recorded is never called again.

At-least-once delivery runs a step twice when its message comes back (a worker died after
recording, a chord header was redelivered); the outcome recorded first stands, so the
second delivery returns it without a model call, a tool run or a hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fleetline.shared import keys
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import SubtaskOutcome
from fleetline.workers.guards.base import Check

if TYPE_CHECKING:
    from fleetline.workers.run import SubtaskRun


class RecordedGuard:
    per_model = False

    def before(self, run: SubtaskRun, trip: RoundTrip) -> Check:
        index = trip.queue("HGET", keys.job_outcomes(run.payload.job_id), run.payload.subtask.id)

        def check(replies: list[Any]) -> SubtaskOutcome | None:
            raw = replies[index]
            if raw is None:
                return None
            return SubtaskOutcome.model_validate_json(raw)

        return check

    def after(self, run: SubtaskRun, outcome: SubtaskOutcome | None, trip: RoundTrip) -> None:
        return None
