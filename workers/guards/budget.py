"""Budget: the call's worst case is reserved before it is made, and settled after.

The reservation is checked against the job, the tenant, the worker type and the fleet
(hour and day) in one script; a refusal moves the run to a cheaper model, and when none
is left the subtask ends `budget_exceeded` without calling anyone. A failed call's hold
is released; what a call cost is settled once per call id, so a redelivery pays nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fleetline.shared.ledger import Scope, parse_reserve
from fleetline.shared.models.base import render_messages
from fleetline.shared.models.prices import call_cost_usd, estimate_tokens, worst_case_cost_usd
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import OutcomeStatus, SubtaskOutcome
from fleetline.workers.guards.base import Check, Reroute

if TYPE_CHECKING:
    from fleetline.workers.run import SubtaskRun


class BudgetGuard:
    per_model = True

    def __init__(self) -> None:
        self.call_id: str | None = None
        self.scopes: list[Scope] = []

    def before(self, run: SubtaskRun, trip: RoundTrip) -> Check:
        settings = run.runtime.settings
        payload = run.payload
        price = settings.models[run.model]
        request = run.request()
        tokens_in = estimate_tokens("".join(render_messages(request)))
        worst_usd = worst_case_cost_usd(price, tokens_in, request.max_output_tokens)
        worst_tokens = tokens_in + request.max_output_tokens
        self.scopes = run.budget_scopes()
        call_id = f"{payload.job_id}:{payload.subtask.id}:{run.attempt.number}:{run.model}"
        index = run.runtime.ledger.queue_reserve(
            trip, call_id, worst_usd, worst_tokens, self.scopes, model=run.model
        )
        # Released in after() unless settled: releasing a refused reservation changes nothing.
        self.call_id = call_id

        def check(replies: list[Any]) -> SubtaskOutcome | Reroute | None:
            reservation = parse_reserve(replies[index])
            if reservation.ok or reservation.duplicate:
                return None
            refusal = str(reservation.refusal) if reservation.refusal else "budget refused"
            return Reroute(
                run.outcome(OutcomeStatus.BUDGET_EXCEEDED, "budget", refusal, model=run.model),
                "budget",
            )

        return check

    def after(self, run: SubtaskRun, outcome: SubtaskOutcome | None, trip: RoundTrip) -> None:
        if self.call_id is None:
            return
        ledger = run.runtime.ledger
        if outcome is not None and outcome.cost_usd > 0:
            tokens = outcome.tokens_in + outcome.tokens_out
            saved = _tiering_saving(run, outcome)
            ledger.queue_settle(
                trip, self.call_id, outcome.cost_usd, tokens, saved_tiering_usd=saved
            )
        else:
            ledger.queue_release(trip, self.call_id)


def _tiering_saving(run: SubtaskRun, outcome: SubtaskOutcome) -> float:
    """What the same tokens would have cost more on the priciest model any tier uses."""
    settings = run.runtime.settings
    in_use = {m for chain in settings.tiers.values() for m in chain}
    top = max(
        (settings.models[m] for m in in_use),
        key=lambda p: call_cost_usd(p, outcome.tokens_in, outcome.tokens_out),
    )
    return call_cost_usd(top, outcome.tokens_in, outcome.tokens_out) - outcome.cost_usd
