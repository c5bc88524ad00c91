"""Cache: an identical call (worker type, model, prompt version, input) is answered from
the cache at no cost; concurrent identical calls across the fleet make one provider call.

Only output that passed the validation gate is stored, so a hit is served as it is.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

from fleetline.shared import metrics
from fleetline.shared.cache import Hit, Lease, cache_key, parse_lookup
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import OutcomeStatus, SubtaskOutcome
from fleetline.workers.guards.base import Check

if TYPE_CHECKING:
    from fleetline.workers.run import SubtaskRun


class CacheGuard:
    per_model = True

    def __init__(self) -> None:
        self.key: str | None = None
        self.token: str | None = None
        self.hit: Hit | None = None

    def before(self, run: SubtaskRun, trip: RoundTrip) -> Check:
        ttl = run.runtime.settings.worker(run.payload.subtask.worker_type).cache_ttl_s
        if not run.runtime.settings.cache.enabled or ttl == 0:
            return lambda _: None
        request = run.request()
        prompt_version = hashlib.sha256(run.agent.prompt.encode()).hexdigest()[:12]
        key = cache_key(
            run.payload.subtask.worker_type,
            run.model,
            prompt_version,
            f"{request.instruction}\n{request.document}",
            run.payload.tenant,
            shared=run.runtime.settings.cache.shared,
        )
        lease_ms = int(run.call_timeout_s() * 1000) + 1000
        cache = run.runtime.cache
        # The subtask's own id: its redelivery reclaims a lease a dead delivery left.
        token = f"{run.payload.job_id}:{run.payload.subtask.id}"
        index = cache.queue_lookup(trip, key, lease_ms, token)
        self.key = key
        self.token = None
        self.hit = None

        def check(replies: list[Any]) -> SubtaskOutcome | None:
            found = parse_lookup(replies[index])
            if not isinstance(found, Hit | Lease) and not run.stopped:
                # Someone else is making this very call: wait for it, within our deadline.
                found = cache.wait_for(key, max(0.0, run.call_timeout_s()), lease_ms)
            if isinstance(found, Lease):
                self.token = found.token
            if not isinstance(found, Hit):
                return None
            self.hit = found
            return run.outcome(OutcomeStatus.OK, output=found.output, model=run.model, cached=True)

        return check

    def after(self, run: SubtaskRun, outcome: SubtaskOutcome | None, trip: RoundTrip) -> None:
        if self.key is None:
            return
        cache = run.runtime.cache
        if self.hit is not None and outcome is not None:
            scopes = run.budget_scopes()
            # Per delivery: the closing trip run again after a lost reply counts it once.
            run.runtime.ledger.queue_record_saving(
                trip, "cache", self.hit.cost_usd, scopes, model=run.model, once=run.delivery
            )
            metrics.cache_saved(self.hit.cost_usd)
        elif outcome is not None and outcome.status is OutcomeStatus.OK and outcome.output:
            ttl = run.runtime.settings.worker(run.payload.subtask.worker_type).cache_ttl_s
            cache.queue_store(
                trip,
                self.key,
                outcome.output,
                outcome.cost_usd,
                ttl,
                self.token,
                model=outcome.model or run.model,
                tenant=run.payload.tenant,
                now=time.time(),
            )
        elif self.token is not None:
            cache.queue_abandon(trip, self.key, self.token)
