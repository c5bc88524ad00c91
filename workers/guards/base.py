"""What a guard is: Redis work queued before the call, a check of its replies, and cleanup."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from shared.batch import Batch
from shared.schemas import SubtaskOutcome

if TYPE_CHECKING:
    from workers.pipeline import SubtaskRun

# Reads the batch's replies; returns an outcome to end the subtask there, or None to go on.
Check = Callable[[list[Any]], SubtaskOutcome | None]


class Guard(Protocol):
    """One concern of the hot path (deadline, crashes, kill switch, breaker, budget, cache)."""

    def before(self, run: SubtaskRun, batch: Batch) -> Check:
        """Queue what this guard needs to know; return the check of its replies."""
        ...

    def after(self, run: SubtaskRun, outcome: SubtaskOutcome | None, batch: Batch) -> None:
        """Queue this guard's closing writes; `outcome` is None when the run will retry."""
        ...
