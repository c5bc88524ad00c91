"""Cancelling a job with real workers: it ends `cancelled` at once, its steps not yet
started call no model and hold nothing, and the audit says who cancelled."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from fleetline.producer.cli import app as cli
from fleetline.shared.ledger import Ledger
from fleetline.shared.schemas import JobStatus, OutcomeStatus
from fleetline.shared.settings import get_settings
from tests.integration.conftest import FleetFactory
from tests.integration.test_cost_control import brief

pytestmark = pytest.mark.integration


def test_a_cancelled_job_runs_none_of_its_waiting_steps(
    start_fleet: FleetFactory, redis_client: redis.Redis, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    fleet = start_fleet(
        with_beat=False,
        FLEETLINE_SIM_CALL_LOG=str(log),
        FLEETLINE_SIM_LATENCY_MS="1500",
        # One extraction at a time: most of the job's extractions wait in their queue.
        FLEETLINE_WORKERS__EXTRACTION__CONCURRENCY="1",
    )
    job_id = fleet.producer.submit(brief(4, deadline_s=40)).job_id
    deadline = time.monotonic() + 20
    while not (log.exists() and '"extraction"' in log.read_text()):
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.05)

    get_settings.cache_clear()
    cancelled = CliRunner().invoke(cli, ["cancel", job_id])
    assert cancelled.exit_code == 0, cancelled.stderr
    assert fleet.store.get(job_id).status is JobStatus.CANCELLED, "at once"

    # Every step's message is still consumed: wait until each has an outcome.
    expected = len(json.loads(fleet.store.raw(job_id)["subtask_ids"]))
    deadline = time.monotonic() + 30
    while len(fleet.store.outcomes(job_id)) < expected:
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.2)
    time.sleep(1.0)  # a synthesis step, if any, is skipped too
    called = {c["call_id"].split(":")[1] for c in map(json.loads, log.read_text().splitlines())}
    outcomes = fleet.store.outcomes(job_id)
    skipped = [o for o in outcomes.values() if o.status is OutcomeStatus.SKIPPED]
    assert skipped, "some steps had not started"
    for outcome in skipped:
        assert outcome.error is not None and outcome.error.category == "cancelled"
        assert outcome.subtask_id not in called, "a skipped step called no model"
        assert outcome.cost_usd == 0
    job = fleet.store.get(job_id)
    assert job.status is JobStatus.CANCELLED, "later outcomes do not change the status"
    assert Ledger(redis_client).job_spend(job_id).reserved_usd == 0, "no hold is left"
    final = [e for e in fleet.store.audit(job_id) if e.fields.get("status") == "cancelled"]
    assert [e.actor.split(":")[0] for e in final] == ["cli"]

    again = CliRunner().invoke(cli, ["cancel", job_id])
    assert again.exit_code == 1 and "already ended" in again.stderr
    assert CliRunner().invoke(cli, ["cancel", "no-such-job"]).exit_code == 2
