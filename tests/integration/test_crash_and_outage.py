"""A whole worker SIGKILLed mid-job, and a Redis restart mid-run, with real processes."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from fleetline.shared.embedded_redis import start_redis
from fleetline.shared.fleet.loading import load_fleet
from fleetline.shared.schemas import JobStatus, OutcomeStatus
from tests.integration.conftest import FleetFactory

pytestmark = pytest.mark.integration

SHORT_LIMITS = {
    # A short visibility timeout so a dead worker's messages come back within the test;
    # every time limit and retry delay must stay below it, and settings check that.
    "FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S": "8",
    "FLEETLINE_CELERY_UNACKED_RESTORE_INTERVAL_S": "1",
    **{
        f"FLEETLINE_WORKERS__{name.upper()}__{field}": value
        for name in load_fleet(None).worker_types
        for field, value in (
            ("SOFT_TIME_LIMIT_S", "4"),
            ("TIME_LIMIT_S", "5"),
            ("RETRY_BACKOFF_MAX_S", "1"),
            ("MAX_CALL_S", "4"),
        )
    },
}


def brief(n_docs: int, deadline_s: float) -> dict[str, object]:
    docs = [{"id": f"d{i}", "text": f"Acme Corp grew {i}% in 2025."} for i in range(n_docs)]
    question = "How did Acme grow?"
    return {
        "kind": "research_brief",
        "deadline_s": deadline_s,
        "input": {"question": question, "documents": docs},
    }


def test_whole_worker_sigkill_mid_job_completes_and_charges_once(
    start_fleet: FleetFactory, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    fleet = start_fleet(
        FLEETLINE_SIM_CALL_LOG=str(log), FLEETLINE_SIM_LATENCY_MS="1500", **SHORT_LIMITS
    )
    receipt = fleet.producer.submit(brief(2, deadline_s=60))

    deadline = time.monotonic() + 20
    while not (log.exists() and '"analysis"' in log.read_text()):
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.05)
    killed_at = time.monotonic()
    os.kill(fleet.fleet.processes["analysis"].pid, signal.SIGKILL)
    # The fleet starts a new analysis worker; the message comes back to it once the
    # visibility timeout has passed.
    job = fleet.wait(receipt.job_id, timeout_s=45)
    recovered_in = time.monotonic() - killed_at

    assert job.status is JobStatus.SUCCEEDED, fleet.logs()
    assert fleet.fleet.restarts == {"analysis": 1}
    made = [json.loads(line) for line in log.read_text().splitlines()]
    assert sum(1 for c in made if c["worker_type"] == "analysis") == 2, "redelivered and run again"
    analysis = [o for o in job.subtasks if o.worker_type == "analysis"]
    assert len(analysis) == 1 and analysis[0].status is OutcomeStatus.OK
    assert job.cost_usd == pytest.approx(sum(o.cost_usd for o in job.subtasks)), "charged once"
    # Restored after the visibility timeout (8 s) plus one restore sweep, not sooner.
    assert recovered_in > 8


def test_redis_restart_mid_run_every_job_reaches_a_terminal_state(
    start_fleet: FleetFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_redis(tmp_path / "redis", persist=True)
    port = server.port
    monkeypatch.setenv("FLEETLINE_REDIS_URL", server.url)
    try:
        fleet = start_fleet(FLEETLINE_SIM_LATENCY_MS="800")
        receipts = [fleet.producer.submit(brief(3, deadline_s=60)) for _ in range(6)]
        time.sleep(1.0)
        server.stop()  # SHUTDOWN-like stop: the append-only file keeps every write
        time.sleep(2.0)
        server = start_redis(tmp_path / "redis", port=port, persist=True)
        late = fleet.producer.submit(brief(2, deadline_s=60))

        jobs = [fleet.wait(r.job_id, timeout_s=90) for r in [*receipts, late]]
    finally:
        server.stop()
    statuses = [(j.status.value, round((j.finished_at or 0) - j.created_at, 1)) for j in jobs]
    assert all(j.status.terminal for j in jobs), statuses
    # The fleet kept consuming: a job sent after the restart ran normally.
    assert jobs[-1].status is JobStatus.SUCCEEDED, statuses
    # In-flight jobs ride the restart out in place (no wait for a redelivery or the
    # watchdog), bar the rare chord whose last part finished as Redis stopped: Celery
    # loses its callback then, and the watchdog ends that job at its deadline.
    assert sum(j.status is JobStatus.SUCCEEDED for j in jobs) >= len(jobs) - 2, statuses
