"""Budget: the first call's upper bound is reserved with the other checks, and every
call of the run is settled after.

The reservation is checked against the job, the tenant, the worker type and the fleet
(hour and day) in one script; a refusal moves the run to a cheaper model, and when none
is left the step ends `budget_exceeded` without calling anyone. Further calls of the run
(corrections, a single call after a batch) reserve their own bounds (`workers.spend`).
What each call cost is settled once per call id, so a redelivery pays nothing twice; a
hold whose call was never made is released.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fleetline.shared.ledger import parse_reserve
from fleetline.shared.models.prices import call_cost_usd
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import OutcomeStatus, SubtaskOutcome
from fleetline.workers.guards.base import Check, Reroute
from fleetline.workers.spend import Billed, bound_of

if TYPE_CHECKING:
    from fleetline.workers.run import SubtaskRun


class BudgetGuard:
    per_model = True

    def before(self, run: SubtaskRun, trip: RoundTrip) -> Check:
        request = run.request()
        bound = bound_of(run, request)
        index = run.runtime.ledger.queue_reserve(
            trip, request.call_id, bound.usd, bound.tokens, run.budget_scopes(), model=run.model
        )

        def check(replies: list[Any]) -> SubtaskOutcome | Reroute | None:
            reservation = parse_reserve(replies[index])
            if reservation.ok:
                run.spend.held[request.call_id] = bound
                return None
            refusal = str(reservation.refusal) if reservation.refusal else "budget refused"
            if reservation.duplicate:
                # An earlier delivery settled, released or lost this call id's hold: this
                # delivery calls only under a hold of its own.
                found = run.spend.reserve(run.renew_call_id())
                if found is None:
                    return None
                refusal = found
            return Reroute(
                run.outcome(OutcomeStatus.BUDGET_EXCEEDED, "budget", refusal, model=run.model),
                "budget",
            )

        return check

    def after(self, run: SubtaskRun, outcome: SubtaskOutcome | None, trip: RoundTrip) -> None:
        ledger = run.runtime.ledger
        for call_id in run.spend.held:
            billed = run.spend.billed.get(call_id)
            if billed is not None and (billed.cost_usd > 0 or billed.tokens_in > 0):
                tokens = billed.tokens_in + billed.tokens_out
                saved = _tiering_saving(run, billed)
                ledger.queue_settle(trip, call_id, billed.cost_usd, tokens, saved_tiering_usd=saved)
            else:
                ledger.queue_release(trip, call_id)


def _tiering_saving(run: SubtaskRun, billed: Billed) -> float:
    """What the same tokens would have cost more on the priciest model any tier uses."""
    settings = run.runtime.settings
    in_use = {m for chain in settings.tiers.values() for m in chain}
    top = max(
        (settings.models[m] for m in in_use),
        key=lambda p: call_cost_usd(p, billed.tokens_in, billed.tokens_out),
    )
    return max(0.0, call_cost_usd(top, billed.tokens_in, billed.tokens_out) - billed.cost_usd)
