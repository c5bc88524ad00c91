"""A step that runs past its time limits on a threads pool, where Celery enforces none: past
the soft limit the watchdog raises SoftTimeLimitExceeded in its thread, as prefork does;
past the hard limit it records the step `timed_out` itself (its job ends, its spend hold is
released), and the worker recycles and is started again.

The runaway is a model call that ignores its timeout (the agent's sim answer sleeps in C,
where no exception raised into its thread lands), the case the per-call timeout cannot cut.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import BaseModel, Field

from fleetline import Fleet, Plan, fan_out
from fleetline.shared.ledger import Ledger
from fleetline.shared.schemas import JobResult, JobStatus, OutcomeStatus
from tests.integration.conftest import FleetFactory, RunningFleet

pytestmark = pytest.mark.integration

APP = "tests.integration.test_runaway_watchdog:fleet"
HARD_LIMIT_S = 2.0


class Note(BaseModel):
    text: str = Field(min_length=1)


class Docs(BaseModel):
    texts: list[str]


def _answer(instruction: str, document: str) -> dict[str, Any]:
    if document.startswith("stuck"):
        time.sleep(3600)  # in C: neither the call's timeout nor a raised exception cuts it
    if document.startswith("spin"):
        until = time.monotonic() + 3600
        while time.monotonic() < until:  # Python code: an exception raised into it lands
            pass
    return {"text": document or "summary"}


fleet = Fleet("runaway")
reader = fleet.agent("reader", tier="cheap", output=Note, prompt="Read.", sim=_answer)
summary = fleet.agent("summary", tier="cheap", output=Note, prompt="Sum up.", sim=_answer)


@fleet.job("read_all", input=Docs)
def read_all(docs: Docs) -> Plan:
    steps = [reader.step(id=f"r{i}", text=text) for i, text in enumerate(docs.texts)]
    return fan_out(steps, then=summary.step(id="summary"))


LIMITS = {
    "FLEETLINE_CACHE_ENABLED": "false",
    "FLEETLINE_WORKERS__READER__POOL": "threads",
    "FLEETLINE_WORKERS__READER__MAX_CALL_S": "1",
    "FLEETLINE_WORKERS__READER__SOFT_TIME_LIMIT_S": "1",
    "FLEETLINE_WORKERS__READER__TIME_LIMIT_S": f"{HARD_LIMIT_S:g}",
    "FLEETLINE_WORKERS__READER__MAX_RETRIES": "0",
    "FLEETLINE_WORKERS__READER__FALLBACK_TIERS": "[]",
}


def _read_all(start_fleet: FleetFactory, first: str) -> tuple[RunningFleet, JobResult]:
    """A fleet under LIMITS running one read_all job of `first` and a fine text, to its end."""
    running = start_fleet(with_beat=False, FLEETLINE_APP=APP, **LIMITS)
    receipt = running.producer.submit(
        {"kind": "read_all", "deadline_s": 60, "input": {"texts": [first, "fine"]}}
    )
    return running, running.wait(receipt.job_id, timeout_s=30)


def test_a_step_past_its_soft_limit_ends_timed_out_in_its_own_thread(
    start_fleet: FleetFactory,
) -> None:
    running, job = _read_all(start_fleet, "spin here")

    assert job.status is JobStatus.DEGRADED, running.logs()
    spun = running.store.outcomes(job.job_id)["r0"]
    assert spun.status is OutcomeStatus.TIMED_OUT
    assert spun.error is not None and "worker time limit" in spun.error.message
    assert spun.latency_ms < HARD_LIMIT_S * 1000
    # It ended through its own path: no recycle was needed.
    assert running.fleet.restarts.get("reader", 0) == 0


def test_a_runaway_step_is_recorded_timed_out_and_its_worker_recycles(
    start_fleet: FleetFactory,
) -> None:
    running, job = _read_all(start_fleet, "stuck here")

    # The job ended well before its deadline: the fan-in ran on what was recorded.
    assert job.status is JobStatus.DEGRADED, running.logs()
    outcomes = {o.subtask_id: o for o in running.store.outcomes(job.job_id).values()}
    stuck, fine = outcomes["r0"], outcomes["r1"]
    assert fine.status is OutcomeStatus.OK
    assert stuck.status is OutcomeStatus.TIMED_OUT
    assert stuck.error is not None and "hard time limit" in stuck.error.message
    assert stuck.latency_ms < (HARD_LIMIT_S + 3) * 1000
    # Nothing of the abandoned call stays held, and nothing was billed for it.
    spend = Ledger(running.producer.store.client).job_spend(job.job_id)
    assert spend.reserved_usd == 0
    # The reader's worker drained and exited to be started again.
    deadline = time.monotonic() + 20
    while running.fleet.restarts.get("reader", 0) < 1:
        assert time.monotonic() < deadline, running.logs()
        time.sleep(0.2)
    running.wait_ready(["reader"])
    again = running.producer.submit(
        {"kind": "read_all", "deadline_s": 60, "input": {"texts": ["also fine"]}}
    )
    assert running.wait(again.job_id, timeout_s=30).status is JobStatus.SUCCEEDED
