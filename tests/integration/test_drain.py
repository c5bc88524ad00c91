"""A worker SIGTERMed mid-job drains: its steps in hand finish, nothing is lost, and no
step is counted toward the poison limit, on the threads and the prefork pool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from fleetline.producer.supervisor import worker_command
from fleetline.shared.schemas import JobStatus, OutcomeStatus
from tests.integration.conftest import FleetFactory, RunningFleet
from tests.integration.test_crash_and_outage import SHORT_LIMITS

pytestmark = pytest.mark.integration

# Three jobs of four documents: twelve extraction steps.
JOBS, DOCS = 3, 4


def brief(job: int) -> dict[str, object]:
    # Documents of their own per job, and no cache: every step makes its own call.
    docs = [{"id": f"d{i}", "text": f"Acme Corp grew {job}.{i}% in 2025."} for i in range(DOCS)]
    return {
        "kind": "research_brief",
        "deadline_s": 60,
        "input": {"question": "How did Acme grow?", "documents": docs},
    }


def start(start_fleet: FleetFactory, calls: Path, **env: str) -> RunningFleet:
    """Every agent but extraction, whose worker the test runs itself (`spawn`)."""
    return start_fleet(
        ["classification", "analysis", "synthesis"],
        with_beat=False,
        FLEETLINE_SIM_CALL_LOG=str(calls),
        FLEETLINE_CACHE_ENABLED="false",
        **{**SHORT_LIMITS, **env},
    )


def spawn(fleet: RunningFleet, log: Path) -> subprocess.Popen[bytes]:
    """An extraction worker outside the supervisor, so that nothing restarts it before
    the test has looked at what it left; in a session of its own, as `fleetline up`
    starts one, so that a signal may go to its whole process group."""
    command = worker_command(fleet.settings, ["extraction"], f"extraction-{os.getpid()}")
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, env=fleet.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    fleet.wait_ready(["extraction"])
    return process


def extraction_calls(log: Path) -> list[tuple[str, str]]:
    """(job id, step id) of every extraction call made so far, from the sim's call log."""
    if not log.exists():
        return []
    made = [json.loads(line) for line in log.read_text().splitlines()]
    # A call id is `<job>:<step>:<attempt>:<model>`.
    ids = [str(c["call_id"]).split(":") for c in made if c["worker_type"] == "extraction"]
    return [(job, step) for job, step, *_ in ids]


def wait_for_calls(fleet: RunningFleet, log: Path, count: int) -> list[tuple[str, str]]:
    deadline = time.monotonic() + 20
    while len(made := extraction_calls(log)) < count:
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.02)
    return made


def extraction_marks(client: redis.Redis) -> dict[str, set[bytes]]:
    """The crash guard's in-flight marks of extraction steps (shared/keys.py inflight)."""
    found = client.scan_iter("fl:job:*:inflight:extract-*")
    return {key.decode(): client.smembers(key) for key in found}


def log_text(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


@pytest.mark.parametrize(
    ("pool", "concurrency", "whole_group"),
    [
        ("threads", JOBS * DOCS, False),
        # SIGTERM to every process of the group (kill -TERM -<pgid>, supervisord's
        # stopasgroup, dumb-init): the pool children must drain with their parent.
        ("prefork", 4, True),
    ],
)
def test_sigterm_drains_the_steps_in_hand_and_counts_no_crash(
    start_fleet: FleetFactory,
    redis_client: redis.Redis,
    tmp_path: Path,
    pool: str,
    concurrency: int,
    whole_group: bool,
) -> None:
    calls, worker_log = tmp_path / "calls.jsonl", tmp_path / "extraction.log"
    fleet = start(
        start_fleet,
        calls,
        FLEETLINE_SIM_LATENCY_MS="2000",
        # A single mark left behind would make its step poison when it comes back.
        FLEETLINE_CELERY_POISON_AFTER_CRASHES="1",
        FLEETLINE_WORKERS__EXTRACTION__POOL=pool,
        FLEETLINE_WORKERS__EXTRACTION__CONCURRENCY=str(concurrency),
    )
    first = spawn(fleet, worker_log)
    receipts = [fleet.producer.submit(brief(j)) for j in range(JOBS)]
    in_hand = wait_for_calls(fleet, calls, concurrency)

    if whole_group:
        os.killpg(first.pid, signal.SIGTERM)
    else:
        first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=30) == 0, log_text(worker_log)

    # The steps in hand finished and were recorded before it exited, and left no mark.
    for job_id, step in in_hand:
        outcome = fleet.store.outcomes(job_id).get(step)
        assert outcome is not None and outcome.status is OutcomeStatus.OK, log_text(worker_log)
    assert extraction_marks(redis_client) == {}
    assert len(extraction_calls(calls)) == len(in_hand), "it took nothing new while draining"

    # What it had not started waited in the queue for the next worker.
    second = spawn(fleet, worker_log)
    try:
        jobs = [fleet.wait(r.job_id, timeout_s=45) for r in receipts]
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert all(j.status is JobStatus.SUCCEEDED for j in jobs), fleet.logs() + log_text(worker_log)
    ran = Counter(extraction_calls(calls))
    assert len(ran) == JOBS * DOCS and set(ran.values()) == {1}, "every step ran once"
    assert extraction_marks(redis_client) == {}


def test_steps_still_running_when_the_grace_ends_count_once_and_come_back(
    start_fleet: FleetFactory, redis_client: redis.Redis, tmp_path: Path
) -> None:
    calls, worker_log = tmp_path / "calls.jsonl", tmp_path / "extraction.log"
    # Calls of 3 s, under the 4 s MAX_CALL_S of SHORT_LIMITS; POISON_AFTER_CRASHES is 2.
    fleet = start(start_fleet, calls, FLEETLINE_SIM_LATENCY_MS="3000")
    first = spawn(fleet, worker_log)
    receipt = fleet.producer.submit(brief(0))
    in_hand = wait_for_calls(fleet, calls, DOCS)

    first.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    first.kill()  # the orchestrator's SIGKILL at the end of a grace shorter than the calls
    first.wait(timeout=10)

    # Those steps did die mid-run: each delivery's mark stays, one crash each.
    marks = extraction_marks(redis_client)
    assert sorted(marks) == sorted(f"fl:job:{{{j}}}:inflight:{s}" for j, s in in_hand)
    assert all(len(members) == 1 for members in marks.values())
    # Their messages were never acked: back after the visibility timeout (8 s), run again
    # under the poison limit.
    second = spawn(fleet, worker_log)
    try:
        job = fleet.wait(receipt.job_id, timeout_s=45)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
    assert job.status is JobStatus.SUCCEEDED, fleet.logs() + log_text(worker_log)
    assert set(Counter(extraction_calls(calls)).values()) == {2}, "each ran again, once"
    assert extraction_marks(redis_client) == {}
