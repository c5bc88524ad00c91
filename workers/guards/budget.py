"""Budget: the first call's upper bound is reserved with the other checks, and every
call of the run is settled after.

The reservation is checked against the job, the tenant, the worker type and the fleet
(hour and day) in one script; a refusal moves the run to a cheaper model, and when none
is left the step ends `budget_exceeded` without calling anyone. Further calls of the run
(corrections, a single call after a batch) reserve their own bounds (`workers.spend`).
What each call cost is settled once per call id, so a redelivery pays nothing twice; a
hold whose call was never made is released. The same reservation takes one request and
the call's token bound from its model's rate window; a full window makes the run wait for
the next (`Defer`) rather than send the call into a 429.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fleetline.shared.ledger import Reservation, parse_reserve
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import OutcomeStatus, SubtaskOutcome
from fleetline.workers.guards.base import Check, Defer, Reroute
from fleetline.workers.spend import bound_of, hold_for, tiering_saving

if TYPE_CHECKING:
    from fleetline.workers.run import SubtaskRun


class BudgetGuard:
    per_model = True

    def before(self, run: SubtaskRun, trip: RoundTrip) -> Check:
        request = run.request()
        bound = bound_of(run, request)
        index = run.runtime.ledger.queue_reserve(
            trip,
            request.call_id,
            bound.usd,
            bound.tokens,
            run.budget_scopes(),
            model=run.model,
            hold_s=hold_for(run),
            delivery=run.delivery,
            rate=run.runtime.settings.models[run.model].rate_limit(run.model),
        )

        def check(replies: list[Any]) -> SubtaskOutcome | Reroute | Defer | None:
            reservation = parse_reserve(replies[index], run.delivery)
            if reservation.ok:
                run.spend.held[request.call_id] = bound
                return None
            if reservation.duplicate:
                # Another delivery took this call id (it may have called on it, and its
                # usage may still be settled), or its hold is gone: this delivery calls
                # only under a hold of its own.
                reservation = run.spend.hold(run.renew_call_id())
                if reservation.ok:
                    return None
            return _refused(run, reservation)

        return check

    def after(self, run: SubtaskRun, outcome: SubtaskOutcome | None, trip: RoundTrip) -> None:
        ledger = run.runtime.ledger
        for call_id in run.spend.held:
            billed = run.spend.billed.get(call_id)
            if billed is not None and (billed.cost_usd > 0 or billed.tokens_in > 0):
                tokens = billed.tokens_in + billed.tokens_out
                saved = tiering_saving(run, billed)
                ledger.queue_settle(trip, call_id, billed.cost_usd, tokens, saved_tiering_usd=saved)
            else:
                ledger.queue_release(trip, call_id)
        if outcome is None:
            # Closing for a retry: this attempt records no outcome, so what its calls cost
            # goes on the job's cost now (the next attempt's outcome carries only its own).
            spent = sum(b.cost_usd for c, b in run.spend.billed.items() if c in run.spend.held)
            if spent > 0:
                p = run.payload
                store = run.runtime.store
                store.queue_charge_attempt(
                    trip, p.job_id, p.subtask.id, run.attempt.number, spent, run.actor
                )


def _refused(run: SubtaskRun, reservation: Reservation) -> Reroute | Defer:
    """A full rate window is waited for; any other refusal moves the run down its chain."""
    refusal = str(reservation.refusal) if reservation.refusal else "budget refused"
    if reservation.retry_after_s is not None:
        return Defer(reservation.retry_after_s, refusal)
    return Reroute(
        run.outcome(OutcomeStatus.BUDGET_EXCEEDED, "budget", refusal, model=run.model),
        "budget",
    )
