"""What a guard is: Redis work queued before the call, a check of its replies, and cleanup."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import SubtaskOutcome

if TYPE_CHECKING:
    from fleetline.workers.run import SubtaskRun


@dataclass(frozen=True)
class Reroute:
    """This model cannot serve the call; try the next of the chain, else end with `outcome`."""

    outcome: SubtaskOutcome
    reason: str


@dataclass(frozen=True)
class Defer:
    """Not now: wait `seconds` and try again, within the deadline (a full rate window: not
    into a 429; a tenant over its fair share: not in another tenant's slot).

    requeue: always wait back in the queue, never in place (the wait holds no worker slot).
    category: the error category when the wait cannot end before the deadline.
    """

    seconds: float
    reason: str
    category: str = "rate_limit"
    requeue: bool = False


class WaitToRun(Exception):
    """Raised out of the guards' checks once every check has read its replies."""

    def __init__(self, wait: Defer) -> None:
        super().__init__(wait.reason)
        self.wait = wait


# Reads the trip's replies: an outcome ends the subtask there, a Reroute moves it to the
# next model, a Defer makes it wait and try again, None lets it go on.
Check = Callable[[list[Any]], SubtaskOutcome | Reroute | Defer | None]


class Guard(Protocol):
    """One concern of the hot path (deadline, crashes, kill switch, breaker, budget, cache).

    `per_model` guards hold something for the run's current model; they are closed and
    run again when the run moves to another model.
    """

    per_model: bool

    def before(self, run: SubtaskRun, trip: RoundTrip) -> Check:
        """Queue what this guard needs to know; return the check of its replies."""
        ...

    def after(self, run: SubtaskRun, outcome: SubtaskOutcome | None, trip: RoundTrip) -> None:
        """Queue this guard's closing writes; `outcome` is None when its hold goes unused
        (the run will retry, or moved to another model).

        It may be called again with the same arguments when Redis failed the first trip,
        so it queues idempotent writes and changes no state of its own.
        """
        ...
