"""Breaker: one fleet-wide circuit breaker per (worker type, model).

An open breaker moves the run to the next model of its chain (another of the same tier,
then a cheaper tier); with none left the subtask ends `circuit_open` at once, calling no
provider. Provider errors count as failures; bad input, deadline skips and answers that
fail validation do not (the provider did answer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fleetline.shared.breakers import Permit, Result, breaker_name
from fleetline.shared.errors import RetryableStepError
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import OutcomeStatus, SubtaskOutcome
from fleetline.workers.guards.base import Check, Reroute

if TYPE_CHECKING:
    from fleetline.workers.run import SubtaskRun

# Error categories that are the provider's fault: these open breakers.
PROVIDER_FAILURES = frozenset({"rate_limited", "server_error", "timeout", "connection_error"})


class BreakerGuard:
    per_model = True

    def __init__(self) -> None:
        self.permit: Permit | None = None
        self.name = ""

    def before(self, run: SubtaskRun, trip: RoundTrip) -> Check:
        self.name = breaker_name(run.payload.subtask.worker_type, run.model)
        self.permit = None
        index = run.runtime.breakers.queue_allow(trip, self.name)
        name = self.name

        def check(replies: list[Any]) -> SubtaskOutcome | Reroute | None:
            self.permit = permit = run.runtime.breakers.parse_allow(name, replies[index])
            if permit.allowed:
                return None
            message = f"breaker {name} is {permit.state.value}"
            if permit.retry_after_s:
                message += f"; next probe in {permit.retry_after_s:.1f}s"
            return Reroute(
                run.outcome(OutcomeStatus.CIRCUIT_OPEN, "circuit_open", message, model=run.model),
                "circuit_open",
            )

        return check

    def after(self, run: SubtaskRun, outcome: SubtaskOutcome | None, trip: RoundTrip) -> None:
        permit = self.permit
        if permit is None or not permit.allowed or permit.unavailable:
            return
        # Per delivery: the closing trip run again after a lost reply counts the result once.
        run.runtime.breakers.queue_record(
            trip, self.name, _result(run, outcome), permit, once=run.delivery
        )


def _result(run: SubtaskRun, outcome: SubtaskOutcome | None) -> Result:
    """What the call says about the provider's health; RELEASE when it says nothing."""
    if outcome is None:
        failed = isinstance(run.call_error, RetryableStepError) and run.called
        return Result.FAILURE if failed else Result.RELEASE
    if outcome.error is not None and outcome.error.category in PROVIDER_FAILURES:
        return Result.FAILURE
    if run.called and not outcome.cached:
        return Result.SUCCESS
    return Result.RELEASE
