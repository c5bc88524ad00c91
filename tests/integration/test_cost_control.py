"""Cost control with real workers: budgets, spend limits, the cache, batching, tiering."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import redis

from fleetline.shared.ledger import Ledger, Window
from fleetline.shared.models.prices import call_cost_usd
from fleetline.shared.schemas import JobResult, JobStatus, OutcomeStatus
from tests.integration.conftest import FleetFactory

pytestmark = pytest.mark.integration

TOPICS = ("bank profits and market stocks", "chip software and cloud AI", "hospital vaccine care")


def brief(n_docs: int, tag: str = "", **spec: object) -> dict[str, object]:
    docs = [
        {
            "id": f"d{i}",
            "text": f"Acme Corp {tag} reported {10 + i}% growth in 2025 on {TOPICS[i % 3]}. "
            f"Jane Smith said item {i} mattered.",
        }
        for i in range(n_docs)
    ]
    return {
        "kind": "research_brief",
        "tenant": "t1",
        "deadline_s": 30,
        "input": {"question": "How did Acme grow?", "documents": docs},
        **spec,
    }


def calls(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_budget_covering_part_of_a_job_is_never_overspent(start_fleet: FleetFactory) -> None:
    fleet = start_fleet()
    budget = 0.0004
    receipt = fleet.producer.submit(brief(4, budget_usd=budget))
    job = fleet.wait(receipt.job_id)

    refused = [o for o in job.subtasks if o.status is OutcomeStatus.BUDGET_EXCEEDED]
    assert refused, "a budget this small cannot cover every subtask"
    assert all(o.cost_usd == 0 and o.error and "job" in o.error.message for o in refused)
    assert job.status is JobStatus.DEGRADED
    assert job.cost_usd <= budget
    spend = Ledger(fleet.store.client).job_spend(receipt.job_id)
    assert spend.spent_usd <= budget and spend.reserved_usd == 0, "nothing left held"


def test_budget_downgrades_to_a_cheaper_tier_before_refusing(start_fleet: FleetFactory) -> None:
    fleet = start_fleet()
    # Enough for cheap-tier calls, not for the worst case of the reasoning tier.
    receipt = fleet.producer.submit(brief(2, budget_usd=0.006))
    job = fleet.wait(receipt.job_id)

    analysis = next(o for o in job.subtasks if o.worker_type == "analysis")
    assert analysis.status is OutcomeStatus.OK
    assert (analysis.model, analysis.routed_from, analysis.route_reason) == (
        "sim-small",
        "sim-large",
        "budget",
    )
    assert job.status is JobStatus.SUCCEEDED and job.cost_usd <= 0.006
    report = Ledger(fleet.store.client).spend_report(Window.DAY)
    assert report.saved_by_tiering > 0


def test_concurrent_jobs_never_spend_past_a_small_daily_limit(start_fleet: FleetFactory) -> None:
    limit = 0.003
    fleet = start_fleet(FLEETLINE_SPEND_DAILY_USD=str(limit))
    receipts = [fleet.producer.submit(brief(3, tag=f"job{i}")) for i in range(12)]
    jobs = [fleet.wait(r.job_id) for r in receipts]

    fleet_spend = Ledger(fleet.store.client).spend_report(Window.DAY).fleet
    assert fleet_spend.spent_usd <= limit
    assert fleet_spend.reserved_usd == 0
    assert sum(j.cost_usd for j in jobs) == pytest.approx(fleet_spend.spent_usd)
    outcomes = [o for j in jobs for o in j.subtasks]
    assert any(o.status is OutcomeStatus.BUDGET_EXCEEDED for o in outcomes)
    assert any(o.status is OutcomeStatus.OK for o in outcomes)


def _all_cached(job: JobResult) -> bool:
    return all(o.cached and o.cost_usd == 0 for o in job.subtasks)


def test_identical_job_is_served_from_the_cache_for_its_tenant_only(
    start_fleet: FleetFactory, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    fleet = start_fleet(FLEETLINE_SIM_CALL_LOG=str(log))
    first = fleet.wait(fleet.producer.submit(brief(3)).job_id)
    made = len(calls(log))
    again = fleet.wait(fleet.producer.submit(brief(3)).job_id)
    assert len(calls(log)) == made, "the second job made no provider call"
    other = fleet.wait(fleet.producer.submit(brief(3, tenant="t2")).job_id)

    assert first.cost_usd > 0 and not any(o.cached for o in first.subtasks)
    assert again.status is JobStatus.SUCCEEDED
    assert _all_cached(again) and again.cost_usd == 0
    assert again.result == first.result
    assert not any(o.cached for o in other.subtasks), "another tenant's prompts are not reused"
    report = Ledger(fleet.store.client).spend_report(Window.DAY)
    assert report.saved_by_cache == pytest.approx(first.cost_usd)


def test_concurrent_identical_calls_make_one_provider_call(
    start_fleet: FleetFactory, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    fleet = start_fleet(FLEETLINE_SIM_CALL_LOG=str(log), FLEETLINE_SIM_LATENCY_MS="400")
    receipts = [fleet.producer.submit(brief(2)) for _ in range(3)]
    jobs = [fleet.wait(r.job_id) for r in receipts]

    assert all(j.status is JobStatus.SUCCEEDED for j in jobs)
    made = calls(log)
    documents_called = sum(int(c["batch"]) or 1 for c in made if c["worker_type"] == "extraction")
    assert documents_called == 2, "each document was extracted once across the three jobs"
    cached = [o for j in jobs for o in j.subtasks if o.cached]
    assert len(cached) == 2 * (len(jobs[0].subtasks)), "two of the three jobs were served"


def test_eight_classifications_share_one_call_with_costs_that_add_up(
    start_fleet: FleetFactory, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    fleet = start_fleet(
        FLEETLINE_SIM_CALL_LOG=str(log),
        FLEETLINE_SIM_LATENCY_MS="100",
        # Wide windows so all eight, fetched one by one from the queue, make one batch.
        FLEETLINE_WORKERS__CLASSIFICATION__BATCH_IDLE_MS="300",
        FLEETLINE_WORKERS__CLASSIFICATION__BATCH_MAX_WAIT_MS="2000",
    )
    job = fleet.wait(fleet.producer.submit(brief(8, latency_profile="batch")).job_id)

    classified = [o for o in job.subtasks if o.worker_type == "classification"]
    assert len(classified) == 8 and all(o.status is OutcomeStatus.OK for o in classified)
    made = [c for c in calls(log) if c["worker_type"] == "classification"]
    assert len(made) == 1 and made[0]["batch"] == 8, made
    assert all(o.batch_size == 8 for o in classified)
    # Each item's share of the tokens adds up to what the provider reported for the call.
    assert sum(o.tokens_in for o in classified) == made[0]["tokens_in"]
    price = fleet.settings.models["sim-small"]
    call_cost = call_cost_usd(
        price, sum(o.tokens_in for o in classified), sum(o.tokens_out for o in classified)
    )
    assert sum(o.cost_usd for o in classified) == pytest.approx(call_cost)
    labels = {o.output["label"] for o in classified if o.output}
    assert labels == {"finance", "technology", "health"}, "each item got its own answer"


def test_a_failed_batch_falls_back_to_single_calls(
    start_fleet: FleetFactory, tmp_path: Path, redis_client: redis.Redis
) -> None:
    log = tmp_path / "calls.jsonl"
    fleet = start_fleet(
        FLEETLINE_SIM_CALL_LOG=str(log),
        FLEETLINE_SIM_LATENCY_MS="50",
        FLEETLINE_SIM_MALFORMED_RATE="1",
        FLEETLINE_WORKERS__CLASSIFICATION__CORRECTION_ATTEMPTS="1",
        FLEETLINE_WORKERS__CLASSIFICATION__BATCH_IDLE_MS="300",
        FLEETLINE_WORKERS__CLASSIFICATION__BATCH_MAX_WAIT_MS="2000",
    )
    job = fleet.wait(fleet.producer.submit(brief(4, latency_profile="batch")).job_id)
    classified = [o for o in job.subtasks if o.worker_type == "classification"]
    assert all(o.status is OutcomeStatus.OK and o.batch_size == 0 for o in classified)
    made = [c for c in calls(log) if c["worker_type"] == "classification"]
    batched = [c for c in made if c["batch"]]
    assert len(batched) == 1, "one batched call, whose answer did not parse"
    singles = [c for c in made if not c["batch"]]
    # One single call per item (its re-ask is a call of its own, `<id>:c1`).
    chains = {re.sub(r":c\d+$", "", c["call_id"]) for c in singles}
    assert len(chains) == 4, "then one single call per item"
    assert len(singles) == 8, "each corrected once, under its own call id"
    time.sleep(0)  # keep redis_client fixture: each test runs on its own database
