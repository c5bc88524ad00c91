"""Kill-switch enforcement: beat sends a check every FLEETLINE_KILLSWITCH_INTERVAL_S seconds.

A check reads the ledger's current hour and day, trips every scope that reached its limit,
reports each switch tripped now (an ERROR log line and a Sentry event), and pauses the
queues the tripped switches cover; queues no longer covered (the window rolled over, or
someone reset the switch) are resumed. Which queues a switch pauses:

- `fleet`: the subtask queues (extraction, classification, analysis). Never synthesis:
  the synthesis callback and the deadline watchdog run there, so every job still ends.
- `worker_type:Y`: Y's queue (never synthesis).
- `tenant:X`: none; workers already end that tenant's subtasks `killed`.

Which queues are paused is kept in Redis, so a restarted beat still resumes them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import redis
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetline.shared import keys
from fleetline.shared.killswitch import KillSwitches, SwitchState
from fleetline.shared.ledger import Ledger, SpendSettings, Window
from fleetline.shared.names import WorkerType
from fleetline.shared.tracing import report_switch

if TYPE_CHECKING:
    # Not at run time: settings will import KillSwitchSettings from here.
    from celery import Celery

    from fleetline.shared.settings import FleetlineSettings

log = logging.getLogger(__name__)

# Queues a switch may pause: never synthesis, where jobs are finalised.
PAUSABLE = tuple(wt.value for wt in WorkerType if wt is not WorkerType.SYNTHESIS)
# The worker-side remote-control command that resumes a queue (registered in workers.app).
# Celery's add_consumer would make *every* worker that hears the broadcast consume the
# queue, synthesis workers included; this one resumes it only where it was started (-Q).
RESUME_COMMAND = "fleetline_resume_queue"


class KillSwitchSettings(BaseSettings):
    """How often beat enforces the spend kill switches."""

    model_config = SettingsConfigDict(env_prefix="FLEETLINE_KILLSWITCH_", extra="ignore")

    interval_s: float = Field(default=15.0, gt=0)
    # Reservations never let spend pass a limit, so a switch waiting for 100 % would never
    # trip: it trips once spend reaches this share of the limit.
    trip_at: float = Field(default=0.95, gt=0, le=1)


def killswitch_settings(settings: FleetlineSettings) -> KillSwitchSettings:
    """The group from the settings object, or read on its own until it is wired in there."""
    group = getattr(settings, "killswitch", None)
    return group if isinstance(group, KillSwitchSettings) else KillSwitchSettings()


def queues_for(scope: str) -> list[str]:
    """The queues a tripped switch of this scope pauses."""
    if scope == "fleet":
        return list(PAUSABLE)
    kind, _, name = scope.partition(":")
    if kind == "worker_type" and name in PAUSABLE:
        return [name]
    return []


def paused_queues(active: Iterable[SwitchState]) -> dict[str, list[str]]:
    """queue -> the scopes of the active switches that pause it."""
    paused: dict[str, set[str]] = {}
    for state in active:
        for queue in queues_for(state.scope):
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
class EnforcementRecord:
    """What the checks left in Redis: paused queues, how many checks ran, the last one."""

    paused: dict[str, list[str]] = field(default_factory=dict)
    checks: int = 0
    last_check_at: float | None = None


def read_enforcement(client: redis.Redis) -> EnforcementRecord:
    raw = {_text(k): _text(v) for k, v in client.hgetall(keys.kill_enforcement()).items()}
    return EnforcementRecord(
        paused=json.loads(raw.get("paused", "{}")),
        checks=int(raw.get("checks", "0")),
        last_check_at=float(raw["last_check_at"]) if "last_check_at" in raw else None,
    )


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
    wanted = paused_queues(active)
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
