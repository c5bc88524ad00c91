"""The guards a subtask passes before its model call, each a small unit of its own.

They run in order from one place (`workers.run.SubtaskRun`): every guard queues its
Redis work into one shared round trip, so all of them together cost one round trip before
the call and one after it.
"""

from fleetline.workers.guards.base import Check, Defer, Guard, Reroute, WaitToRun
from fleetline.workers.guards.breaker import BreakerGuard
from fleetline.workers.guards.budget import BudgetGuard
from fleetline.workers.guards.cache import CacheGuard
from fleetline.workers.guards.cancelled import CancelledGuard
from fleetline.workers.guards.crash import CrashGuard
from fleetline.workers.guards.deadline import DeadlineGuard
from fleetline.workers.guards.fair_share import FairShareGuard
from fleetline.workers.guards.killswitch import KillSwitchGuard
from fleetline.workers.guards.recorded import RecordedGuard

__all__ = [
    "BreakerGuard",
    "BudgetGuard",
    "CacheGuard",
    "CancelledGuard",
    "Check",
    "CrashGuard",
    "DeadlineGuard",
    "Defer",
    "FairShareGuard",
    "Guard",
    "KillSwitchGuard",
    "RecordedGuard",
    "Reroute",
    "WaitToRun",
]
