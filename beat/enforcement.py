"""Kill-switch enforcement: beat sends a check every FLEETLINE_KILLSWITCH_INTERVAL_S seconds.

A check reads the ledger's current hour and day, trips every scope that reached its limit,
reports each switch tripped now (an ERROR log line and a Sentry event), and pauses the
queues the tripped switches cover; queues no longer covered (the window rolled over, or
someone reset the switch) are resumed. Which queues a switch pauses:

- `fleet`: every agent's queue, except those that run a fan-out's then-step (the chord
  callback finalises jobs there; the producer records them in `keys.fan_in_queues()`).
  Never a tool's (tools spend no model money) nor housekeeping, where the deadline
  watchdog runs, so every job still ends.
- `worker_type:Y`: Y's queue, if the fleet-wide switch would pause it.
- `tenant:X`: none; workers already end that tenant's steps `killed`.

Which queues are paused is kept in Redis, so a restarted beat still resumes them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import redis

from fleetline.shared import keys
from fleetline.shared.killswitch import KillSwitches, SwitchState, read_enforcement
from fleetline.shared.ledger import Ledger, SpendSettings, Window
from fleetline.shared.sentry import report_switch

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

# The worker-side remote-control command that resumes a queue (registered in workers.app).
# Celery's add_consumer would make *every* worker that hears the broadcast consume the
# queue, synthesis workers included; this one resumes it only where it was started (-Q).
RESUME_COMMAND = "fleetline_resume_queue"


def pausable_queues(client: redis.Redis, agents: Iterable[str]) -> list[str]:
    """The queues a switch may pause: the agents' queues, but for those where fan-outs
    finalise their jobs."""
    finishing = {_text(q) for q in client.smembers(keys.fan_in_queues())}
    return sorted(set(agents) - finishing)


def queues_for(scope: str, pausable: Collection[str]) -> list[str]:
    """The queues a tripped switch of this scope pauses."""
    if scope == "fleet":
        return sorted(pausable)
    kind, _, name = scope.partition(":")
    if kind == "worker_type" and name in pausable:
        return [name]
    return []


def paused_queues(active: Iterable[SwitchState], pausable: Collection[str]) -> dict[str, list[str]]:
    """queue -> the scopes of the active switches that pause it."""
    paused: dict[str, set[str]] = {}
    for state in active:
        for queue in queues_for(state.scope, pausable):
            paused.setdefault(queue, set()).add(state.scope)
    return {q: sorted(scopes) for q, scopes in sorted(paused.items())}


class QueueControl(Protocol):
    """Stops and restarts consumption of a queue across the fleet."""

    def pause(self, queue: str) -> None: ...

    def resume(self, queue: str) -> None: ...


class CeleryQueueControl:
    """Celery remote control: broadcasts, no replies awaited."""

    def __init__(self, app: Celery) -> None:
        self._app = app

    def pause(self, queue: str) -> None:
        self._app.control.cancel_consumer(queue)

    def resume(self, queue: str) -> None:
        self._app.control.broadcast(RESUME_COMMAND, arguments={"queue": queue})


def resume_home_queue(consumer: Any, queue: str, home: Collection[str]) -> dict[str, str]:
    """Worker side of RESUME_COMMAND: consume `queue` again if this worker started with it."""
    if queue not in home:
        return {"ok": f"{queue} is not a queue of this worker"}
    consumer.call_soon(consumer.add_task_queue, queue)
    return {"ok": f"resuming {queue}"}


@dataclass(frozen=True)
class Enforcement:
    """One check: switches tripped by it, switches active after it, queue changes."""

    tripped: list[SwitchState]
    active: list[SwitchState]
    paused: dict[str, list[str]]
    newly_paused: list[str]
    resumed: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "tripped": [json.loads(s.to_json()) for s in self.tripped],
            "active": [json.loads(s.to_json()) for s in self.active],
            "paused": self.paused,
            "newly_paused": self.newly_paused,
            "resumed": self.resumed,
        }


def enforce(
    client: redis.Redis,
    limits: SpendSettings,
    control: QueueControl,
    pausable: Collection[str],
    *,
    report: Callable[[SwitchState], object] = report_switch,
    now: float | None = None,
    trip_at: float = 1.0,
) -> Enforcement:
    """Trip the switches whose scope reached its limit, and pause or resume queues to match.

    Args:
        client: the Redis of the ledger and the switches.
        limits: the spend limits (settings.spend).
        control: pauses and resumes queues (Celery remote control in the fleet).
        pausable: the queues a switch may pause (`pausable_queues`).
        report: called once for each switch this check tripped (Sentry).
        now: the time to check at (tests).
        trip_at: the share of a limit at which its switch trips.
    """
    now = time.time() if now is None else now
    ledger, switches = Ledger(client), KillSwitches(client)
    reports = [ledger.spend_report(window, now) for window in Window]
    tripped = switches.check_and_trip(reports, limits, now, trip_at=trip_at)
    for state in tripped:
        log.error(
            "spend kill switch tripped: %s (%s): %s; resets at %s",
            state.scope,
            state.window.value,
            state.reason,
            time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(state.resets_at)),
        )
        report(state)
    active = switches.status(now)
    wanted = paused_queues(active, pausable)
    before = read_enforcement(client).paused
    # Sent on every check, not only on change: a worker (re)started since the last one
    # consumes its queue again. Cancelling a queue a worker does not consume does nothing.
    for queue in wanted:
        control.pause(queue)
    resumed = sorted(set(before) - set(wanted))
    for queue in resumed:
        control.resume(queue)
    newly = sorted(set(wanted) - set(before))
    if newly:
        log.warning("paused consumption of %s under %s", ", ".join(newly), _scopes(wanted))
    if resumed:
        log.warning("resumed consumption of %s: no switch covers them now", ", ".join(resumed))
    pipe = client.pipeline(transaction=True)
    pipe.hset(
        keys.kill_enforcement(),
        mapping={"paused": json.dumps(wanted), "last_check_at": repr(now)},
    )
    pipe.hincrby(keys.kill_enforcement(), "checks", 1)
    pipe.execute()
    return Enforcement(tripped, active, wanted, newly, resumed)


def _scopes(paused: dict[str, list[str]]) -> str:
    return ", ".join(sorted({s for scopes in paused.values() for s in scopes}))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
