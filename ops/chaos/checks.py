"""At the end of a scenario, every job and every cent: what reached its end, what was
recorded twice, and the ledger against the sim's invoice (`fleetline spend reconcile`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from fleetline.shared import keys
from fleetline.shared.ledger import Ledger, Window
from fleetline.shared.schemas import JobStatus
from fleetline.shared.state import StateStore
from ops.chaos.harness import ChaosFleet, Submitted

FLEETLINE = str(Path(sys.executable).with_name("fleetline"))
TERMINAL = {s.value for s in JobStatus if s.terminal}
# Past its deadline a job is finalised by the watchdog within a second or two; a job still
# running after this long is lost.
GRACE_S = 30.0
# Longer than the longest hold a step's calls make (time limit plus margin).
HOLD_WAIT_S = 120.0


@dataclass
class Account:
    """One scenario's figures (results JSON: one object per scenario)."""

    jobs: int = 0
    terminal: int = 0
    lost: int = 0
    double_recorded: int = 0
    billed_usd: float = 0.0
    charged_usd: float = 0.0
    uncharged_calls: int = 0
    unbilled_calls: int = 0
    holds_left: int = 0
    recovery_s: float | None = None
    refused_submits: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    passed: bool = False
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def wait_terminal(
    client: redis.Redis, jobs: list[Submitted], seen: dict[str, str] | None = None
) -> dict[str, str]:
    """Each job's status once every job is terminal, or its deadline plus GRACE_S passed;
    `seen` holds statuses read before (a finished job's record may have expired since)."""
    statuses: dict[str, str] = dict(seen or {})
    last = max((j.deadline_at for j in jobs), default=time.time()) + GRACE_S
    while True:
        pending = [j for j in jobs if statuses.get(j.job_id) not in TERMINAL]
        if not pending:
            return statuses
        pipe = client.pipeline(transaction=False)
        for job in pending:
            pipe.hget(keys.job(job.job_id), "status")
        for job, status in zip(pending, pipe.execute(), strict=True):
            statuses[job.job_id] = status.decode() if status else "missing"
        if time.time() > last:
            return statuses
        time.sleep(0.5)


def recorded_twice(client: redis.Redis, job_id: str) -> int:
    """Steps of the job the audit says were recorded more than once."""
    trail = StateStore(client, finished_ttl_s=0).audit(job_id)
    counts = Counter(e.fields.get("subtask") for e in trail if e.action == "subtask_recorded")
    return sum(1 for n in counts.values() if n > 1)


def held(client: redis.Redis) -> int:
    """Ledger call records still holding money."""
    members: Any = client.zrange(keys.spend_holds(), 0, -1)
    pipe = client.pipeline(transaction=False)
    for member in members:
        pipe.hget(member, "state")
    return sum(1 for state in pipe.execute() if state == b"reserved")


def reconcile(fleet: ChaosFleet) -> dict[str, Any]:
    if not fleet.invoice.exists():
        fleet.invoice.touch()
    env = {**fleet.env, "FLEETLINE_REDIS_URL": fleet.direct_url}
    done = subprocess.run(
        [FLEETLINE, "spend", "reconcile", "--invoice", str(fleet.invoice), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if not done.stdout.strip():
        raise RuntimeError(f"spend reconcile failed ({done.returncode}): {done.stderr}")
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def account(
    fleet: ChaosFleet,
    client: redis.Redis,
    jobs: list[Submitted],
    *,
    healed_at: float | None = None,
    refused: int = 0,
    exact_money: bool = True,
    seen: dict[str, str] | None = None,
) -> Account:
    """The scenario's figures; `passed` when nothing was lost, recorded twice or left
    uncharged, the ledger agrees with the invoice (when `exact_money`) and no hold is left."""
    statuses = wait_terminal(client, jobs, seen)
    out = Account(jobs=len(jobs), refused_submits=refused)
    out.statuses = dict(Counter(statuses.values()))
    out.terminal = sum(1 for s in statuses.values() if s in TERMINAL)
    out.lost = out.jobs - out.terminal
    out.double_recorded = sum(recorded_twice(client, j.job_id) for j in jobs)
    # A restarted worker replays what its predecessor billed; a dead delivery's hold goes
    # back once its step's time limit has passed (any reader of the ledger sweeps it).
    deadline = time.monotonic() + HOLD_WAIT_S
    while (left := held(client)) and time.monotonic() < deadline:
        time.sleep(1.0)
        Ledger(client).spend_report(Window.DAY)
    out.holds_left = left
    money = reconcile(fleet)
    out.billed_usd = round(money["billed_usd"], 9)
    out.charged_usd = round(money["charged_usd"], 9)
    kinds = Counter(d["kind"] for d in money["differences"])
    out.uncharged_calls = kinds.get("uncharged", 0)
    out.unbilled_calls = kinds.get("unbilled", 0)
    if healed_at is not None:
        out.recovery_s = recovery(client, jobs, healed_at)
    money_ok = not money["differences"] or not exact_money
    out.passed = (
        out.lost == 0
        and out.double_recorded == 0
        and out.holds_left == 0
        and money_ok
        and (out.uncharged_calls == 0 or not exact_money)
    )
    if money["differences"] and not exact_money:
        out.notes.append(f"ledger differences (not held to exact): {dict(kinds)}")
    return out


def recovery(client: redis.Redis, jobs: list[Submitted], healed_at: float) -> float | None:
    """Seconds from the heal to the first job that finished after it."""
    pipe = client.pipeline(transaction=False)
    for job in jobs:
        pipe.hget(keys.job(job.job_id), "finished_at")
    after = [float(f) for f in pipe.execute() if f and float(f) >= healed_at]
    return round(min(after) - healed_at, 2) if after else None
