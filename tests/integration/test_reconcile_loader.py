"""`fleetline spend reconcile`'s loader against a real Redis: the records of an invoice
larger than one read batch, and the unbilled records of its jobs, all found."""

from __future__ import annotations

import json

import pytest
import redis

from fleetline.producer.cli_spend import ledger_records
from fleetline.shared.batched_reads import READ_BATCH
from fleetline.shared.ledger import Ledger, SpendSettings, scopes_for
from fleetline.shared.models.prices import call_cost_usd
from fleetline.shared.reconcile import parse_invoice, reconcile
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.settings import ModelSpec

pytestmark = pytest.mark.integration

MODELS = {"m": ModelSpec(provider="sim", input_usd_per_mtok=0.15, output_usd_per_mtok=0.60)}
JOBS = ("j1", "j2", "j3")
# Enough calls that the records take several read batches and no job's fit in one.
CALLS_PER_JOB = READ_BATCH + 100


def settle_all(client: redis.Redis, calls: list[tuple[str, str, float]]) -> None:
    ledger = Ledger(client)
    trip = RoundTrip(client)
    for job, call_id, usd in calls:
        scopes = scopes_for(SpendSettings(), job_id=job, tenant="t1", worker_type="extraction")
        ledger.queue_reserve(trip, call_id, usd * 2, 1000, scopes, model="m")
        ledger.queue_settle(trip, call_id, usd, 300)
    trip.execute()


def bill(job: str, call_id: str) -> str:
    return json.dumps(
        {"model": "m", "tokens_in": 200, "tokens_out": 100, "call_id": call_id, "job_id": job}
    )


def test_an_invoice_of_several_read_batches_is_reconciled_call_by_call(
    redis_client: redis.Redis,
) -> None:
    usd = call_cost_usd(MODELS["m"], 200, 100)
    billed = [(job, f"{job}:s{k}:1:m", usd) for job in JOBS for k in range(CALLS_PER_JOB)]
    # Charged but not billed: one of an invoiced job's calls, and a call of a job the
    # invoice does not name, whose id starts like an invoiced job's (not that job's).
    extra = [("j2", "j2:late:1:m", usd), ("j2x", "j2x:s0:1:m", usd)]
    settle_all(redis_client, billed + extra)
    lines = parse_invoice([bill(job, call_id) for job, call_id, _ in billed])

    result = reconcile(lines, MODELS, ledger_records(Ledger(redis_client)))

    assert [(d.kind, d.call_id) for d in result.differences] == [("unbilled", "j2:late:1:m")]
    assert result.billed_calls == len(billed)
    assert result.charged_calls == len(billed) + 1
    assert result.billed_usd == pytest.approx(usd * len(billed), abs=1e-9)
    assert result.charged_usd == pytest.approx(usd * (len(billed) + 1), abs=1e-9)
    assert set(result.by_job) == set(JOBS)
    assert result.by_job["j2"].charged_usd == pytest.approx(usd * (CALLS_PER_JOB + 1), abs=1e-9)
