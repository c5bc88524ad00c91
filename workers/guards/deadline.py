"""Deadline: a subtask that starts after its budget is gone ends `skipped` at once."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import OutcomeStatus, SubtaskOutcome
from fleetline.workers.guards.base import Check

if TYPE_CHECKING:
    from fleetline.workers.run import SubtaskRun


class DeadlineGuard:
    """Needs no Redis: the deadline travels in the payload."""

    per_model = False

    def before(self, run: SubtaskRun, trip: RoundTrip) -> Check:
        def check(_: list[Any]) -> SubtaskOutcome | None:
            if run.payload.deadline_at > time.time():
                return None
            return run.outcome(OutcomeStatus.SKIPPED, "deadline", "started after its deadline")

        return check

    def after(self, run: SubtaskRun, outcome: SubtaskOutcome | None, trip: RoundTrip) -> None:
        return None
