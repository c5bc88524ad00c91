"""Faults of processes and of Redis: pool children and whole workers SIGKILLed, Redis
restarted and killed, and a spend limit raced by tenants while workers die."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from fleetline.shared.ledger import Ledger, Window
from ops.bench.context import worker_types
from ops.chaos.checks import Account, account
from ops.chaos.harness import ChaosFleet, JobStream, every, killer, research_spec
from ops.chaos.run import Run


# The visibility timeout a killed worker's unacked steps come back after: short here, so
# that a run ends in minutes.
def short_visibility() -> dict[str, str]:
    """Settings for a visibility timeout of 30 s: every agent's and tool's time limits and
    backoff must fit inside it (checked at start)."""
    env = {"FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S": "30"}
    for name in worker_types():
        for field, value in (
            ("SOFT_TIME_LIMIT_S", "8"),
            ("TIME_LIMIT_S", "10"),
            ("RETRY_BACKOFF_MAX_S", "5"),
        ):
            env[f"FLEETLINE_WORKERS__{name.upper()}__{field}"] = value
    return env


def kill_children(run: Run) -> Account:
    """SIGKILL random prefork pool children every few hundred ms."""
    prefork = {
        "FLEETLINE_WORKERS__EXTRACTION__POOL": "prefork",
        "FLEETLINE_WORKERS__EXTRACTION__CONCURRENCY": "3",
        "FLEETLINE_WORKERS__CLASSIFICATION__POOL": "prefork",
        "FLEETLINE_WORKERS__CLASSIFICATION__CONCURRENCY": "3",
    }
    fleet = run.fleet("kill_children", **short_visibility(), **prefork)
    return _killed_while_streaming(run, fleet, fleet.pool_children, 0.4, 1, "pool children")


def kill_workers(run: Run) -> Account:
    """SIGKILL whole worker processes (threads pool); the supervisor starts them again."""
    fleet = run.fleet("kill_workers", **short_visibility())
    out = _kill_workers_on(run, fleet, period_s=4.0)
    if not run.quick:
        shipped = run.fleet("kill_workers_shipped")
        honest = _kill_workers_on(run, shipped, period_s=20.0)
        out.notes.append(
            "with the shipped 300 s visibility timeout: "
            f"lost {honest.lost}, recovery {honest.recovery_s} s, "
            f"statuses {honest.statuses}"
        )
    return out


def _kill_workers_on(run: Run, fleet: ChaosFleet, period_s: float) -> Account:
    def workers() -> Iterable[int]:
        return fleet.worker_pids().values()

    out = _killed_while_streaming(run, fleet, workers, period_s, 2, "worker processes")
    out.notes.append(f"restarts {fleet.supervisor.restarts}")
    return out


def _killed_while_streaming(
    run: Run,
    fleet: ChaosFleet,
    victims: Callable[[], Iterable[int]],
    period_s: float,
    seed: int,
    what: str,
) -> Account:
    """A stream of jobs while one of `victims` is SIGKILLed every `period_s`."""
    stream = JobStream(fleet.producer).start(run.rate, run.fault_s)
    killed = every(period_s, run.fault_s, killer(victims, seed))
    stream.join()
    out = account(fleet, run.client(fleet), stream.jobs, healed_at=time.time())
    out.notes.append(f"{killed} {what} SIGKILLed")
    return out


def redis_restart(run: Run) -> Account:
    """Redis stopped and started again (its append-only file) twice mid-run; then, apart,
    SIGKILLed once (fsync every second: not held to exact reconciliation)."""
    fleet = run.fleet("redis_restart")
    stream = JobStream(fleet.producer).start(run.rate, run.fault_s)
    for _ in range(2):
        time.sleep(run.fault_s / 3)
        run.server.stop()
        time.sleep(3)
        run.server.restart()
    stream.join()
    out = account(
        fleet, run.client(fleet), stream.jobs, healed_at=time.time(), refused=stream.refused
    )

    killed_fleet = run.fleet("redis_sigkill")
    stream = JobStream(killed_fleet.producer).start(run.rate, run.fault_s)
    time.sleep(run.fault_s / 2)
    run.server.kill()
    time.sleep(3)
    run.server.restart()
    stream.join()
    honest = account(
        killed_fleet,
        run.client(killed_fleet),
        stream.jobs,
        healed_at=time.time(),
        refused=stream.refused,
        exact_money=False,
    )
    out.notes.append(
        "SIGKILLed once (not held to exact money): "
        + json.dumps({k: honest.as_dict()[k] for k in _HONEST})
    )
    return out


_HONEST = ("jobs", "terminal", "lost", "double_recorded", "uncharged_calls", "unbilled_calls",
           "holds_left", "recovery_s", "notes")  # fmt: skip


def spend_race(run: Run) -> Account:
    """Twenty tenants race a fleet-wide daily limit of 1.5 jobs' worth while workers are
    SIGKILLed: what was billed never goes above the limit."""
    probe = run.fleet("spend_probe", with_beat=False)
    one = probe.producer.submit(research_spec(0))
    job_usd = _wait_cost(probe, one.job_id)
    probe.stop()
    limit = round(1.5 * job_usd, 9)
    fleet = run.fleet("spend_race", **short_visibility(), FLEETLINE_SPEND_DAILY_USD=f"{limit:.9f}")

    def spec(n: int) -> dict[str, Any]:
        return research_spec(n, tenant=f"t{n % 20}")

    def workers() -> Iterable[int]:
        return fleet.worker_pids().values()

    stream = JobStream(fleet.producer, spec=spec).start(run.rate * 2, run.fault_s / 2)
    killed = every(3.0, run.fault_s / 2, killer(workers, 3))
    stream.join()
    out = account(fleet, run.client(fleet), stream.jobs, refused=stream.refused)
    day = Ledger(run.client(fleet)).spend_report(Window.DAY).fleet
    over = out.billed_usd > limit + 1e-9 or day.spent_usd > limit + 1e-9
    out.passed = out.passed and not over
    out.notes.append(
        f"limit {limit:.6f} USD (1.5 jobs of {job_usd:.6f}); billed {out.billed_usd:.6f}, "
        f"ledger {day.spent_usd:.6f}; {out.refused_submits} submits refused by the switch; "
        f"{killed} workers SIGKILLed"
    )
    return out


def _wait_cost(fleet: ChaosFleet, job_id: str) -> float:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = fleet.producer.store.get(job_id)
        if job.status.terminal:
            return job.cost_usd
        time.sleep(0.2)
    raise RuntimeError("the probe job did not finish")
