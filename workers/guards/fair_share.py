"""Fair share: a tenant's steps in flight, fleet-wide, stay within its limit.

One tenant's flood of jobs would otherwise take every worker slot while the others' jobs
queue behind it. A step over its tenant's limit goes back to its queue for a moment
(not a retry, and holding no worker slot) while the other tenants' steps run. A slot is
a delivery in a Redis sorted set, given back when the step ends, or when a holder that
died lapses (after its worker type's hard time limit).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fleetline.shared import keys
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import SubtaskOutcome
from fleetline.workers.guards.base import Check, Defer

if TYPE_CHECKING:
    from fleetline.workers.run import SubtaskRun

# How long a step over its tenant's share waits in its queue before it asks again.
FAIR_SHARE_WAIT_S = 0.5


class FairShareGuard:
    per_model = False

    def __init__(self) -> None:
        self.held = False

    def before(self, run: SubtaskRun, trip: RoundTrip) -> Check:
        tenant = run.payload.tenant
        limit = run.runtime.settings.limits.tenant_steps(tenant)
        self.held = False
        if limit is None:
            return lambda _: None
        policy = run.runtime.settings.worker(run.payload.subtask.worker_type)
        lapse_s = policy.time_limit_s + 30
        now = time.time()
        index = trip.script(
            run.runtime.fair_share_take,
            [keys.tenant_slots(tenant)],
            [repr(now), repr(now + lapse_s), run.delivery, limit, int(lapse_s) + 60],
        )

        def check(replies: list[Any]) -> Defer | None:
            taken, count = (int(x) for x in replies[index])
            if taken:
                self.held = True
                return None
            reason = f"tenant {tenant} has {count} steps in flight, its limit"
            return Defer(FAIR_SHARE_WAIT_S, reason, category="fair_share", requeue=True)

        return check

    def after(self, run: SubtaskRun, outcome: SubtaskOutcome | None, trip: RoundTrip) -> None:
        if self.held:
            trip.queue("ZREM", keys.tenant_slots(run.payload.tenant), run.delivery)
