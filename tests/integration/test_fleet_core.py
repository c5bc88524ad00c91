"""The fleet end to end: real worker processes, real Redis, the sim provider."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from fleetline.shared.schemas import JobStatus, OutcomeStatus
from tests.integration.conftest import ROOT, FleetFactory

pytestmark = pytest.mark.integration

SAMPLE_PATH = ROOT / "ops" / "samples" / "research_brief.json"
SAMPLE = json.loads(SAMPLE_PATH.read_text()) if SAMPLE_PATH.exists() else {}


def brief(n_docs: int, **spec: object) -> dict[str, object]:
    docs = [
        {
            "id": f"d{i}",
            "text": f"Acme Corp grew revenue {10 + i}% in 2025. Bank profits and market "
            f"stocks rose while Jane Smith led investment number {i}.",
        }
        for i in range(n_docs)
    ]
    return {
        "kind": "research_brief",
        "tenant": "t1",
        "deadline_s": 60,
        "input": {"question": "How did Acme grow revenue?", "documents": docs},
        **spec,
    }


def test_research_brief_succeeds_with_expected_subtasks(start_fleet: FleetFactory) -> None:
    fleet = start_fleet()
    receipt = fleet.producer.submit(SAMPLE)
    job = fleet.wait(receipt.job_id)

    n_docs = len(SAMPLE["input"]["documents"])
    assert job.status is JobStatus.SUCCEEDED
    assert job.completeness == 1.0
    ids = {o.subtask_id for o in job.subtasks}
    expected = {f"extract-{d['id']}" for d in SAMPLE["input"]["documents"]}
    expected |= {f"classify-{d['id']}" for d in SAMPLE["input"]["documents"]}
    assert expected <= ids
    assert sum(1 for i in ids if i.startswith("analyse-")) == -(-n_docs // 4)
    assert "synthesis" in ids
    assert all(o.status is OutcomeStatus.OK for o in job.subtasks)
    assert job.result is not None and job.result["answer"]["brief"]
    # The job's cost is exactly what its subtasks were charged.
    assert job.cost_usd == pytest.approx(sum(o.cost_usd for o in job.subtasks))
    assert all(o.tokens_in > 0 and o.tokens_out > 0 and o.cost_usd > 0 for o in job.subtasks)
    models = {o.worker_type: o.model for o in job.subtasks}
    assert models == {
        "extraction": "sim-small",
        "classification": "sim-small",
        "analysis": "sim-large",
        "synthesis": "sim-long",
    }

    # One audit entry per state change, versions 1..N with no gaps, ending at the record's.
    audit = fleet.store.audit(receipt.job_id)
    assert [e.version for e in audit] == list(range(1, job.version + 1))
    assert audit[0].action == "created"
    assert audit[-1].action == "finalised" and audit[-1].fields["status"] == "succeeded"
    recorded = [e.fields["subtask"] for e in audit if e.action == "subtask_recorded"]
    assert sorted(recorded) == sorted(ids)


def test_faulty_provider_every_job_finishes_with_retries_recorded(
    start_fleet: FleetFactory,
) -> None:
    fleet = start_fleet(
        FLEETLINE_SIM_ERROR_RATE="0.3",
        FLEETLINE_SIM_LATENCY_MS="20",
        FLEETLINE_WORKERS__EXTRACTION__RETRY_BACKOFF_S="0.05",
        FLEETLINE_WORKERS__CLASSIFICATION__RETRY_BACKOFF_S="0.05",
        FLEETLINE_WORKERS__ANALYSIS__RETRY_BACKOFF_S="0.05",
        FLEETLINE_WORKERS__SYNTHESIS__RETRY_BACKOFF_S="0.05",
    )
    receipts = [fleet.producer.submit(brief(4, idempotency_key=f"k{i}")) for i in range(12)]
    jobs = [fleet.wait(r.job_id, timeout_s=90) for r in receipts]

    assert {j.status for j in jobs} <= {JobStatus.SUCCEEDED, JobStatus.DEGRADED}
    outcomes = [o for j in jobs for o in j.subtasks]
    assert max(o.attempts for o in outcomes) > 1, "a 30 % error rate must cause retries"
    for job in jobs:
        assert job.cost_usd == pytest.approx(sum(o.cost_usd for o in job.subtasks))
        if job.status is JobStatus.DEGRADED:
            assert job.completeness < 1


def _analysis_call_started(call_log: Path) -> bool:
    if not call_log.exists():
        return False
    return any('"analysis"' in line for line in call_log.read_text().splitlines())


def test_pool_child_sigkilled_mid_subtask_job_completes_charged_once(
    start_fleet: FleetFactory, tmp_path: Path
) -> None:
    call_log = tmp_path / "calls.jsonl"
    fleet = start_fleet(
        FLEETLINE_SIM_CALL_LOG=str(call_log),
        FLEETLINE_SIM_LATENCY_MS="2500",
        FLEETLINE_WORKERS__ANALYSIS__POOL="prefork",
        FLEETLINE_WORKERS__ANALYSIS__CONCURRENCY="1",
    )
    receipt = fleet.producer.submit(brief(2))

    deadline = time.monotonic() + 30
    while not _analysis_call_started(call_log):
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.05)
    worker = psutil.Process(fleet.fleet.processes["analysis"].pid)
    children = worker.children()
    assert len(children) == 1
    os.kill(children[0].pid, signal.SIGKILL)

    job = fleet.wait(receipt.job_id, timeout_s=60)
    assert job.status is JobStatus.SUCCEEDED, fleet.logs()
    calls = [json.loads(line) for line in call_log.read_text().splitlines()]
    assert sum(1 for c in calls if c["worker_type"] == "analysis") == 2, "the subtask ran twice"
    analysis = [o for o in job.subtasks if o.worker_type == "analysis"]
    assert len(analysis) == 1 and analysis[0].status is OutcomeStatus.OK
    recorded = [
        e for e in fleet.store.audit(receipt.job_id) if e.fields.get("subtask") == "analyse-0"
    ]
    assert len(recorded) == 1, "recorded once"
    assert job.cost_usd == pytest.approx(sum(o.cost_usd for o in job.subtasks)), "charged once"
