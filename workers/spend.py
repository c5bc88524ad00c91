"""Every provider call of a run, reserved before it is made and settled after, one by one.

A run's first call is reserved with the other guards' checks (the budget guard); every
further call (a correction re-ask, a single call after a batch that did not serve) takes a
reservation of its own first, in its own round trip, and is not made when it does not
fit. What each call cost is settled under its own call id, so a redelivery or a retry that
settles again changes nothing, and a call's usage is never folded into another's hold.
Each bill is written ahead to the process's usage spool before anything else happens, so a
worker that dies before settling, or a Redis away past the grace, loses no charge.
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fleetline.shared import keys
from fleetline.shared.ledger import Hold, Reservation, parse_reserve
from fleetline.shared.models.base import ModelRequest, ModelResponse, render_messages
from fleetline.shared.models.prices import call_cost_usd, input_token_bound
from fleetline.shared.rate_limits import WAIT_IN_PLACE_S
from fleetline.shared.round_trip import RoundTrip, one_reply
from fleetline.workers.usage_spool import Usage

if TYPE_CHECKING:
    from fleetline.workers.run import SubtaskRun


# Past its step's hard time limit no call of it is still running (a thread's call is cut
# at MAX_CALL_S): a hold left by a delivery that died goes back this long after it was
# made, not at the ledger's 15-minute default. A settle that comes later (a restarted
# worker replaying what its predecessor billed) still charges.
HOLD_MARGIN_S = 15.0


def hold_for(run: SubtaskRun) -> Hold:
    """How long a call of this step holds its reservation, and how long the ledger keeps
    the call's record and the job's counter (keys.SPEND_CALL_MARGIN_S, SPEND_JOB_TTL_S)."""
    settings = run.runtime.settings
    policy = settings.worker(run.payload.subtask.worker_type)
    seconds = max(policy.time_limit_s, policy.max_call_s) + HOLD_MARGIN_S
    celery = settings.celery
    redelivered_within = (
        celery.visibility_timeout_s
        + celery.unacked_restore_interval_s * celery.unacked_restore_throttle
    )
    record_s = (
        redelivered_within + seconds + settings.redis.outage_grace_s + keys.SPEND_CALL_MARGIN_S
    )
    return Hold(
        seconds,
        math.ceil(record_s),
        job_until=run.payload.deadline_at,
        job_keep_s=settings.limits.finished_ttl_s + keys.SPEND_JOB_MARGIN_S,
    )


@dataclass(frozen=True)
class Bound:
    """The most one call may cost: its input bound plus all of its output tokens."""

    usd: float
    tokens: int


@dataclass
class Billed:
    """What the provider reported for one call id."""

    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


def bound_of(run: SubtaskRun, request: ModelRequest) -> Bound:
    """The upper bound of `request` on the run's current model."""
    tokens_in = input_token_bound(*render_messages(request))
    price = run.runtime.settings.models[request.model]
    return Bound(
        call_cost_usd(price, tokens_in, request.max_output_tokens),
        tokens_in + request.max_output_tokens,
    )


@dataclass
class RunSpend:
    """The holds a run took, by call id in the order taken, and what each call billed."""

    run: SubtaskRun
    held: dict[str, Bound] = field(default_factory=dict)
    billed: dict[str, Billed] = field(default_factory=dict)

    def reserve(self, request: ModelRequest) -> str | None:
        """Hold `request`'s bound before it is made: None when held, else the refusal.

        A full rate window is waited for in place when it opens soon enough (a further
        call of a run that has already paid for its first answer is worth the wait);
        otherwise the call is refused like any other.
        """
        reservation = self.hold(request)
        while (
            reservation.retry_after_s is not None
            and reservation.retry_after_s <= WAIT_IN_PLACE_S
            and time.time() + reservation.retry_after_s < self.run.payload.deadline_at
        ):
            self.run.wait_for_window(reservation.retry_after_s)
            reservation = self.hold(request)
        if reservation.ok:
            return None
        if reservation.duplicate:
            # Another delivery's record: its hold (or its charge) stands for it; this
            # delivery may not spend on it.
            return f"call {request.call_id} was already {reservation.state}"
        return str(reservation.refusal) if reservation.refusal else "budget refused"

    def hold(self, request: ModelRequest) -> Reservation:
        """Reserve `request`'s bound (and its rate window) in one round trip."""
        bound = bound_of(self.run, request)
        ledger = self.run.runtime.ledger
        scopes = self.run.budget_scopes()
        rate = self.run.runtime.settings.models[request.model].rate_limit(request.model)

        def queue(trip: RoundTrip) -> int:
            return ledger.queue_reserve(
                trip,
                request.call_id,
                bound.usd,
                bound.tokens,
                scopes,
                model=request.model,
                hold_s=hold_for(self.run),
                delivery=self.run.delivery,
                rate=rate,
            )

        reservation = parse_reserve(one_reply(self.run.runtime.redis, queue), self.run.delivery)
        if reservation.ok:
            self.held[request.call_id] = bound
        return reservation

    def bill(self, call_id: str, tokens_in: int, tokens_out: int, cost_usd: float) -> None:
        """Count what the provider reported for `call_id` (added up per call id), on disk
        first."""
        found = self.billed.setdefault(call_id, Billed())
        found.tokens_in += tokens_in
        found.tokens_out += tokens_out
        found.cost_usd += cost_usd
        self.run.runtime.spool.write(
            Usage(
                call_id,
                found.cost_usd,
                found.tokens_in + found.tokens_out,
                tiering_saving(self.run, found),
            )
        )

    def settled(self) -> None:
        """The closing round trip charged every bill: the spool may forget them."""
        if self.billed:
            self.run.runtime.spool.settled(list(self.billed))

    def crash_if_told(self) -> None:
        """The sim's fault injection between a step's billed calls and their settlement."""
        sim = self.run.runtime.settings.sim
        subtask = self.run.payload.subtask
        if (
            self.billed
            and sim.crash_at == "settlement"
            and sim.crashes(subtask.worker_type, subtask.text)
        ):
            os.kill(os.getpid(), signal.SIGKILL)

    def bill_response(self, request: ModelRequest, response: ModelResponse) -> float:
        """Count one answered call; return its cost."""
        price = self.run.runtime.settings.models[request.model]
        cost = call_cost_usd(price, response.tokens_in, response.tokens_out)
        self.bill(request.call_id, response.tokens_in, response.tokens_out, cost)
        return cost


def tiering_saving(run: SubtaskRun, billed: Billed) -> float:
    """What the same tokens would have cost more on the priciest model any tier uses."""
    settings = run.runtime.settings
    in_use = {m for chain in settings.tiers.values() for m in chain}
    top = max(
        (settings.models[m] for m in in_use),
        key=lambda p: call_cost_usd(p, billed.tokens_in, billed.tokens_out),
    )
    return max(0.0, call_cost_usd(top, billed.tokens_in, billed.tokens_out) - billed.cost_usd)
