"""Batching with real workers never puts two tenants' documents in one model call.

Two tenants submit batchable jobs at once; the sim's call log says which jobs each call
was for, and the receipts say whose jobs they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetline.shared.schemas import JobStatus, OutcomeStatus
from tests.integration.conftest import FleetFactory, RunningFleet

pytestmark = pytest.mark.integration

TENANTS = ("acme", "globex")
TOPICS = ("bank profits and market stocks", "chip software and cloud AI", "hospital vaccine care")
# Wide windows, so the calls of both jobs, fetched one by one from the queue, meet.
WIDE_WINDOWS = {
    "FLEETLINE_SIM_LATENCY_MS": "100",
    "FLEETLINE_WORKERS__CLASSIFICATION__BATCH_IDLE_MS": "300",
    "FLEETLINE_WORKERS__CLASSIFICATION__BATCH_MAX_WAIT_MS": "2000",
}


def brief(tenant: str, n_docs: int) -> dict[str, object]:
    docs = [
        {
            "id": f"d{i}",
            "text": f"{tenant.title()} Corp reported {10 + i}% growth in 2025 on "
            f"{TOPICS[i % 3]}. Jane Smith said item {i} mattered.",
        }
        for i in range(n_docs)
    ]
    return {
        "kind": "research_brief",
        "tenant": tenant,
        "deadline_s": 30,
        "latency_profile": "batch",
        "input": {"question": f"How did {tenant} grow?", "documents": docs},
    }


def run_both(fleet: RunningFleet, log: Path) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Both tenants' jobs, submitted at once: the classification calls and each job's tenant."""
    receipts = {t: fleet.producer.submit(brief(t, 4)) for t in TENANTS}
    for tenant, receipt in receipts.items():
        job = fleet.wait(receipt.job_id)
        assert job.status is JobStatus.SUCCEEDED, (tenant, job)
        classified = [o for o in job.subtasks if o.worker_type == "classification"]
        assert len(classified) == 4 and all(o.status is OutcomeStatus.OK for o in classified)
    made = [json.loads(line) for line in log.read_text().splitlines()]
    tenant_of = {r.job_id: t for t, r in receipts.items()}
    return [c for c in made if c["worker_type"] == "classification"], tenant_of


def test_batched_calls_hold_one_tenant_and_same_tenant_calls_still_batch(
    start_fleet: FleetFactory, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    fleet = start_fleet(FLEETLINE_SIM_CALL_LOG=str(log), **WIDE_WINDOWS)
    made, tenant_of = run_both(fleet, log)

    batched = [c for c in made if c["batch"]]
    assert batched, made
    for call in batched:
        job_ids = call["batch_job_ids"]
        assert isinstance(job_ids, list) and len(job_ids) == call["batch"], call
        assert {tenant_of[j] for j in job_ids} == {call["tenant"]}, call
    # Calls of one tenant still share a model call: each tenant had a batch of several.
    assert {c["tenant"] for c in batched if int(c["batch"]) > 1} == set(TENANTS), made
    # And every single call is its own job's, of its tenant.
    for call in made:
        if not call["batch"]:
            assert tenant_of[str(call["job_id"])] == call["tenant"], call


def test_tenants_that_share_the_cache_may_share_a_batch(
    start_fleet: FleetFactory, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    fleet = start_fleet(
        FLEETLINE_SIM_CALL_LOG=str(log), FLEETLINE_CACHE_SHARED="true", **WIDE_WINDOWS
    )
    made, tenant_of = run_both(fleet, log)

    mixed = [c for c in made if c["batch"] and len({tenant_of[j] for j in c["batch_job_ids"]}) > 1]
    assert mixed, made
    # A call of two tenants is neither's: its items say whose they are.
    assert all(c["tenant"] == "" and c["job_id"] == "" for c in mixed)
