"""Kill switch: under a tripped spend switch a subtask ends `killed` before any call."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fleetline.shared.killswitch import parse_active_for
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import OutcomeStatus, SubtaskOutcome
from fleetline.workers.guards.base import Check

if TYPE_CHECKING:
    from fleetline.workers.run import SubtaskRun


class KillSwitchGuard:
    per_model = False

    def before(self, run: SubtaskRun, trip: RoundTrip) -> Check:
        index = run.runtime.kill_switches.queue_active_for(
            trip, run.payload.tenant, run.payload.subtask.worker_type
        )

        def check(replies: list[Any]) -> SubtaskOutcome | None:
            switch = parse_active_for(replies[index], time.time())
            if switch is None:
                return None
            return run.outcome(
                OutcomeStatus.KILLED,
                "kill_switch",
                f"{switch.scope} {switch.window} spend switch tripped ({switch.reason}); "
                f"resets at {time.strftime('%H:%M:%SZ', time.gmtime(switch.resets_at))}",
            )

        return check

    def after(self, run: SubtaskRun, outcome: SubtaskOutcome | None, trip: RoundTrip) -> None:
        return None
