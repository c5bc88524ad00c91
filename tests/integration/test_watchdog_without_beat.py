"""The deadline watchdog keeps its promise when beat is SIGKILLed: its successor waits up
to 30 s for RedBeat's lock, and the workers' own timers finalise overdue jobs meanwhile."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from fleetline.shared.schemas import JobStatus
from tests.integration.conftest import FleetFactory
from tests.integration.test_cost_control import brief

pytestmark = pytest.mark.integration

LOCK = "fl:redbeat::lock"


def test_a_killed_beat_does_not_pause_the_deadline_watchdog(
    start_fleet: FleetFactory, redis_client: redis.Redis
) -> None:
    # No analysis worker: its steps wait in their queue, and only the watchdog ends a job.
    fleet = start_fleet(["extraction", "classification", "synthesis"])
    deadline = time.monotonic() + 20
    while not redis_client.exists(LOCK):
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.1)
    os.kill(fleet.fleet.processes["beat"].pid, signal.SIGKILL)
    time.sleep(1.5)  # the supervisor starts a new beat, which now waits for the lock
    assert redis_client.exists(LOCK), "the dead beat's lock still stands"

    receipt = fleet.producer.submit(brief(2, deadline_s=3))
    job = fleet.wait(receipt.job_id, timeout_s=30)
    late_s = (job.finished_at or 0) - (job.created_at + 3)

    assert job.status in (JobStatus.DEGRADED, JobStatus.TIMED_OUT, JobStatus.FAILED), job.status
    assert [o.worker_type for o in job.subtasks].count("analysis") == 0
    assert fleet.fleet.restarts.get("beat") == 1
    assert late_s < 1.5, f"finalised {late_s:.2f}s after its deadline"
