"""The ledger's keys live as long as the settings say, not a fixed day, and a call whose
record went is still reconciled, and never charged twice.

A real fleet runs a job with a short finished-job TTL; its call records go when each call
is settled (the job's counter answers for them from then on), and its job counter no
sooner than its deadline and no later than deadline plus that TTL. A record that stays (a
call of no job's counter) goes once no redelivery can come (visibility timeout, restore
scan, hold, outage grace, margin).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from fleetline.shared import keys
from fleetline.shared.ledger import Hold, Ledger, Scope, ScopeKind, SpendSettings, scopes_for
from fleetline.shared.schemas import JobStatus
from tests.integration.conftest import FleetFactory
from tests.integration.test_budget_bounds import APP, TEXT
from tests.integration.test_invoice_reconcile import lines, reconcile

pytestmark = pytest.mark.integration

FINISHED_TTL_S = 60
DEADLINE_S = 40


def _scopes(job: str = "j1") -> list[Scope]:
    return scopes_for(SpendSettings(), job_id=job, tenant="acme", worker_type="facts")


def test_a_fleets_call_records_and_job_counter_follow_the_settings(
    start_fleet: FleetFactory, redis_client: redis.Redis, tmp_path: Path
) -> None:
    invoice = tmp_path / "invoice.jsonl"
    fleet = start_fleet(
        with_beat=False,
        FLEETLINE_APP=APP,
        FLEETLINE_CACHE_ENABLED="false",
        FLEETLINE_SIM_INVOICE=str(invoice),
        FLEETLINE_LIMITS_FINISHED_TTL_S=str(FINISHED_TTL_S),
    )
    spec = {"kind": "facts_job", "input": {"text": TEXT}, "deadline_s": DEADLINE_S}
    job_id = fleet.producer.submit(spec).job_id
    job = fleet.wait(job_id)
    assert job.status is JobStatus.SUCCEEDED, fleet.logs()
    billed = [line["call_id"] for line in lines(invoice)]
    assert billed

    left = [c for c in billed if redis_client.exists(keys.spend_call(c))]
    assert left == [], "a settled call of a job keeps no record"
    job_ttl = redis_client.ttl(keys.spend_job(job_id))
    assert FINISHED_TTL_S < job_ttl <= DEADLINE_S + FINISHED_TTL_S + keys.SPEND_JOB_MARGIN_S

    # The job's counter has every charge for reconcile.
    code, data, err = reconcile(invoice)
    assert (code, data.get("differences")) == (0, []), (err, data)
    assert data["by_job"][job_id]["charged_usd"] == pytest.approx(
        data["by_job"][job_id]["billed_usd"], abs=1e-9
    )
    assert data["by_tenant"][job.tenant]["charged_usd"] == pytest.approx(job.cost_usd, abs=1e-9)


def test_a_settle_after_the_record_went_charges_nothing_and_the_id_stays_used(
    redis_client: redis.Redis,
) -> None:
    ledger = Ledger(redis_client)
    now = time.time()
    hold = Hold(30, 120, job_until=now + 50, job_keep_s=90)
    assert ledger.reserve("j1:s:1:m", 0.05, 100, _scopes(), now=now, hold_s=hold).ok
    assert 110 < redis_client.ttl(keys.spend_call("j1:s:1:m")) <= 120
    assert 80 < redis_client.ttl(keys.spend_job("j1")) <= 90
    assert ledger.settle("j1:s:1:m", 0.02, 40, now=now).applied
    assert not redis_client.exists(keys.spend_call("j1:s:1:m")), "the job's counter answers"
    spent = ledger.job_spend("j1")
    assert spent.spent_usd == pytest.approx(0.02)
    assert (spent.calls, spent.reserved_usd) == (1, 0)

    late = ledger.settle("j1:s:1:m", 0.02, 40, now=now)
    assert (late.applied, late.state) == (False, "settled")
    assert ledger.job_spend("j1").spent_usd == pytest.approx(0.02)
    released = ledger.release("j1:s:1:m")
    assert (released.applied, released.state) == (False, "settled")
    again = ledger.reserve("j1:s:1:m", 0.05, 100, _scopes(), now=now, hold_s=hold, delivery="d2")
    assert (again.ok, again.duplicate, again.state) == (False, True, "settled")
    kept = ledger.call_records(["j1:s:1:m", "j1:s:1:other"])
    assert list(kept) == ["j1:s:1:m"]
    assert (kept["j1:s:1:m"].state, kept["j1:s:1:m"].actual_usd) == ("settled", 0.02)
    assert (kept["j1:s:1:m"].job_id, kept["j1:s:1:m"].tenant) == ("j1", "acme")
    assert ledger.job_call_ids(["j1"]) == {"j1": ["j1:s:1:m"]}


def test_a_job_counter_is_never_shortened_and_a_saving_leaves_its_ttl(
    redis_client: redis.Redis,
) -> None:
    ledger = Ledger(redis_client)
    now = time.time()
    long = Hold(30, 120, job_until=now + 500, job_keep_s=90)
    short = Hold(30, 120, job_until=now + 10, job_keep_s=90)
    assert ledger.reserve("j1:a", 0.01, 10, _scopes(), now=now, hold_s=long).ok
    assert ledger.reserve("j1:b", 0.01, 10, _scopes(), now=now, hold_s=short).ok
    ledger.record_saving("cache", 0.5, _scopes(), now=now)
    assert 490 < redis_client.ttl(keys.spend_job("j1")) <= 500
    assert ledger.job_spend("j1").saved_cache_usd == pytest.approx(0.5)
    # A job that only saved (every step answered from the cache) gets the default.
    ledger.record_saving("cache", 0.5, _scopes("j2"), now=now)
    assert redis_client.ttl(keys.spend_job("j2")) > 86_400


def test_a_record_written_before_this_change_still_settles_and_sweeps(
    redis_client: redis.Redis,
) -> None:
    ledger = Ledger(redis_client)
    now = time.time()
    assert ledger.reserve("j1:new", 0.01, 10, _scopes(), now=now, hold_s=60).ok
    # The old shape: every counter as [key, scope], no `keys`, no job index.
    job = keys.spend_job("j1")
    redis_client.hincrby(job, "job:j1|reserved_usd", 30_000_000)
    redis_client.hset(
        keys.spend_call("old"),
        mapping={
            "state": "reserved",
            "usd": "30000000",
            "tokens": "0",
            "counters": f'[["{job}", "job:j1"]]',
            "reserved_at": repr(now),
            "delivery": "",
        },
    )
    redis_client.zadd(keys.spend_holds(), {keys.spend_call("old"): now + 60})
    assert ledger.settle("old", 0.02, 0, now=now).applied
    spent = ledger.job_spend("j1")
    assert spent.spent_usd == pytest.approx(0.02)
    # The old record's hold was given back; the new call, on a job without a budget, holds
    # nothing in the job's counter.
    assert spent.reserved_usd == 0
    record = ledger.call_records(["old"])["old"]
    assert (record.state, record.job_id) == ("settled", "j1")


def test_a_hold_given_in_seconds_keeps_its_record_at_least_the_default(
    redis_client: redis.Redis,
) -> None:
    ledger = Ledger(redis_client)
    scope = [Scope(ScopeKind.JOB, "j3")]
    assert ledger.reserve("j3:round:1", 0.01, 10, scope, hold_s=5).ok
    assert redis_client.ttl(keys.spend_call("j3:round:1")) == keys.SPEND_CALL_TTL_S
    assert ledger.release("j3:round:1").applied
    assert not redis_client.exists(keys.spend_call("j3:round:1")), "its job's counter answers"
    assert ledger.call_records(["j3:round:1"])["j3:round:1"].state == "released"
