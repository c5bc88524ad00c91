"""The spend ledger against a real Redis that these tests started."""

from __future__ import annotations

import multiprocessing
import random
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from fleetline.shared import keys
from fleetline.shared.ledger import (
    Ledger,
    Scope,
    ScopeKind,
    SpendSettings,
    parse_reserve,
    parse_settle,
    scopes_for,
)
from fleetline.shared.round_trip import RoundTrip

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 22, 30, tzinfo=UTC).timestamp()


@pytest.fixture
def url(redis_url: str) -> str:
    """A database of its own on the Redis these tests started (tests/integration/conftest)."""
    return redis_url


@pytest.fixture
def client(redis_client: redis.Redis) -> redis.Redis:
    return redis_client


def _scopes(limits: SpendSettings, job: str = "j1", tenant: str = "acme") -> list[Scope]:
    return scopes_for(limits, job_id=job, tenant=tenant, worker_type="analysis")


def test_settle_charges_the_actual_cost_once(client: redis.Redis) -> None:
    ledger = Ledger(client)
    scopes = _scopes(SpendSettings())
    assert ledger.reserve("c1", 0.10, 900, scopes, model="sim-large", now=NOW).ok
    held = ledger.spend_report("hour", NOW)
    assert held.fleet.reserved_usd == pytest.approx(0.10)
    assert held.fleet.spent_usd == 0

    first = ledger.settle("c1", 0.04, 300, now=NOW + 1)
    second = ledger.settle("c1", 0.04, 300, now=NOW + 2)
    assert (first.applied, second.applied, second.state) == (True, False, "settled")

    for window in ("hour", "day"):
        report = ledger.spend_report(window, NOW)
        assert report.fleet.spent_usd == pytest.approx(0.04)
        assert report.fleet.reserved_usd == 0
        assert report.fleet.calls == 1
        assert report.by("tenant")["acme"].spent_usd == pytest.approx(0.04)
        assert report.by("agent")["analysis"].spent_tokens == 300
        assert report.by("model")["sim-large"].spent_usd == pytest.approx(0.04)
        assert "j1" not in report.by("job"), "a job counts in its own counter only"
        assert report.by("tenant")["acme"].reserved_usd == 0, "no limit reads it: no hold"
    assert ledger.job_spends()["j1"].spent_usd == pytest.approx(0.04)
    job = ledger.job_spend("j1")
    assert job.spent_usd == pytest.approx(0.04)
    assert (job.reserved_usd, job.spent_tokens) == (0, 300)


def test_a_refused_reservation_names_the_limit_and_holds_nothing(client: redis.Redis) -> None:
    ledger = Ledger(client)
    scopes = _scopes(SpendSettings(daily_usd=10, tenant_hourly_usd={"acme": 0.10}))
    assert ledger.reserve("c1", 0.08, 100, scopes, now=NOW).ok
    refused = ledger.reserve("c2", 0.05, 100, scopes, now=NOW)
    assert not refused.ok
    assert refused.refusal is not None
    assert (refused.refusal.scope, refused.refusal.window) == ("tenant:acme", "hour")
    assert refused.refusal.metric == "usd"
    assert refused.refusal.headroom == pytest.approx(0.02)
    report = ledger.spend_report("hour", NOW)
    assert report.fleet.reserved_usd == pytest.approx(0.08)
    assert report.by("tenant")["acme"].reserved_tokens == 100
    # Another tenant is not limited by acme's limit.
    assert ledger.reserve("c3", 0.05, 100, _scopes(SpendSettings(), tenant="zeta"), now=NOW).ok
    # Nothing of the refused call was recorded: it may be reserved again once there is room.
    assert ledger.settle("c2", 0.05, 10).state == "unknown"


def test_a_job_token_budget_refuses_on_tokens(client: redis.Redis) -> None:
    ledger = Ledger(client)
    scopes = scopes_for(
        SpendSettings(), job_id="j1", tenant="a", worker_type="x", job_budget_tokens=1000
    )
    assert ledger.reserve("c1", 0.01, 800, scopes, now=NOW).ok
    refused = ledger.reserve("c2", 0.01, 300, scopes, now=NOW)
    assert refused.refusal is not None
    assert (refused.refusal.scope, refused.refusal.window) == ("job:j1", "lifetime")
    assert (refused.refusal.metric, refused.refusal.headroom) == ("tokens", 200)


def test_release_frees_headroom_once(client: redis.Redis) -> None:
    ledger = Ledger(client)
    scopes = _scopes(SpendSettings(daily_usd=0.10))
    assert ledger.reserve("c1", 0.08, 100, scopes, now=NOW).ok
    assert not ledger.reserve("c2", 0.05, 100, scopes, now=NOW).ok
    assert ledger.release("c1").applied
    assert not ledger.release("c1").applied
    assert ledger.settle("c1", 0.08, 100).state == "released"
    assert ledger.reserve("c2", 0.05, 100, scopes, now=NOW).ok
    report = ledger.spend_report("day", NOW)
    assert report.fleet.reserved_usd == pytest.approx(0.05)
    assert report.fleet.spent_usd == 0


def test_reserving_the_same_call_twice_holds_once(client: redis.Redis) -> None:
    ledger = Ledger(client)
    scopes = _scopes(SpendSettings())
    assert ledger.reserve("c1", 0.05, 100, scopes, now=NOW).ok
    again = ledger.reserve("c1", 0.05, 100, scopes, now=NOW)
    assert (again.ok, again.duplicate) == (True, True)
    assert ledger.spend_report("day", NOW).fleet.reserved_usd == pytest.approx(0.05)


def test_a_crashed_workers_hold_expires_and_a_late_settle_still_charges(
    client: redis.Redis,
) -> None:
    ledger = Ledger(client)
    scopes = _scopes(SpendSettings(daily_usd=0.10))
    assert ledger.reserve("crashed", 0.08, 100, scopes, now=NOW, hold_s=60).ok
    assert not ledger.reserve("c2", 0.05, 100, scopes, now=NOW + 30).ok
    assert client.ttl(keys.spend_call("crashed")) == keys.SPEND_CALL_TTL_S
    # After the hold lapses the headroom is back, without anyone releasing it.
    assert ledger.spend_report("day", NOW + 61).fleet.reserved_usd == 0
    assert ledger.reserve("c2", 0.05, 100, scopes, now=NOW + 61).ok
    # The worker was only slow: what it spent is still charged, once.
    assert ledger.settle("crashed", 0.02, 50, now=NOW + 62).applied
    assert not ledger.settle("crashed", 0.02, 50, now=NOW + 63).applied
    report = ledger.spend_report("day", NOW + 64)
    assert report.fleet.spent_usd == pytest.approx(0.02)
    assert report.fleet.reserved_usd == pytest.approx(0.05)


def test_window_counters_expire_just_after_their_window(client: redis.Redis) -> None:
    ledger = Ledger(client)
    late = datetime(2026, 11, 25, 22, 59, 30, tzinfo=UTC).timestamp()
    assert ledger.reserve("c1", 0.05, 100, _scopes(SpendSettings()), now=late).ok
    hour_ttl = client.ttl("fl:{spend}:h:2026112522")
    day_ttl = client.ttl("fl:{spend}:d:20261125")
    assert 30 + keys.SPEND_WINDOW_GRACE_S - 2 <= hour_ttl <= 30 + keys.SPEND_WINDOW_GRACE_S
    assert 3630 + keys.SPEND_WINDOW_GRACE_S - 2 <= day_ttl <= 3630 + keys.SPEND_WINDOW_GRACE_S
    # Settled after the hour rolled over: charged to the hour the call was reserved in.
    assert ledger.settle("c1", 0.03, 90, now=late + 40).applied
    assert ledger.spend_report("hour", late).fleet.spent_usd == pytest.approx(0.03)
    assert ledger.spend_report("hour", late + 40).fleet.spent_usd == 0


def test_pipeline_forms_share_a_round_trip_with_other_guards(client: redis.Redis) -> None:
    ledger = Ledger(client)
    scopes = _scopes(SpendSettings(daily_usd=1))
    trip = RoundTrip(client)
    trip.queue("GET", "some-other-guard")
    first = ledger.queue_reserve(trip, "c1", 0.5, 100, scopes, model="m", now=NOW)
    second = ledger.queue_reserve(trip, "c2", 0.6, 100, scopes, model="m", now=NOW)
    replies = trip.execute()
    assert parse_reserve(replies[first]).ok
    assert not parse_reserve(replies[second]).ok
    trip = RoundTrip(client)
    i, j = ledger.queue_settle(trip, "c1", 0.25, 80, now=NOW), ledger.queue_release(trip, "c2")
    replies = trip.execute()
    settled, released = parse_settle(replies[i]), parse_settle(replies[j])
    assert settled.applied
    assert released.state == "unknown"
    assert ledger.spend_report("day", NOW).fleet.spent_usd == pytest.approx(0.25)


def test_savings_are_counted_per_scope(client: redis.Redis) -> None:
    ledger = Ledger(client)
    scopes = _scopes(SpendSettings())
    ledger.record_saving("cache", 0.03, scopes, now=NOW)
    ledger.record_saving("cache", 0.02, scopes, now=NOW)
    ledger.record_saving("tiering", 0.5, scopes, now=NOW)
    report = ledger.spend_report("hour", NOW)
    assert report.saved_by_cache == pytest.approx(0.05)
    assert report.saved_by_tiering == pytest.approx(0.5)
    assert report.by("tenant")["acme"].saved_cache_usd == pytest.approx(0.05)
    assert client.ttl("fl:{spend}:h:2026112522") > 0


# -- concurrency: threads and processes racing for a small daily limit -------------------------

LIMIT = 1.0


def spend_worker(url: str, worker: int, calls: int, start: Any) -> tuple[int, float, float]:
    """Reserve, then settle (twice), release or abandon; return refusals, settled, held."""
    client = redis.Redis.from_url(url)
    ledger = Ledger(client)
    limits = SpendSettings(daily_usd=LIMIT)
    rng = random.Random(worker)
    refused, settled, held = 0, 0.0, 0.0
    start.wait(timeout=60)
    try:
        for i in range(calls):
            usd = rng.choice([0.01, 0.02, 0.05])
            call = f"w{worker}-c{i}"
            scopes = scopes_for(
                limits, job_id=f"j{worker}", tenant=f"t{worker % 3}", worker_type="analysis"
            )
            if not ledger.reserve(call, usd, 100, scopes, model="m", now=NOW).ok:
                refused += 1
                continue
            if i % 3 == 0:
                actual = round(usd * rng.uniform(0.2, 1.0), 6)
                ledger.settle(call, actual, 60, now=NOW)
                ledger.settle(call, actual, 60, now=NOW)
                settled += actual
            elif i % 3 == 1:
                ledger.release(call)
            else:
                held += usd
    finally:
        client.close()
    return refused, settled, held


def _process_worker(url: str, worker: int, calls: int, start: Any, out: Any) -> None:
    out.put(spend_worker(url, worker, calls, start))


def test_concurrent_reservations_never_pass_the_limit(url: str, client: redis.Redis) -> None:
    ctx = multiprocessing.get_context("spawn")
    n_threads, n_procs, calls = 8, 2, 150
    start = ctx.Barrier(n_threads + n_procs)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_process_worker, args=(url, 100 + p, calls, start, out))
        for p in range(n_procs)
    ]
    for proc in procs:
        proc.start()
    results: list[tuple[int, float, float]] = []
    lock = threading.Lock()

    def run(worker: int) -> None:
        result = spend_worker(url, worker, calls, start)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results += [out.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
        assert proc.exitcode == 0

    report = Ledger(client).spend_report("day", NOW)
    spent, held = report.fleet.spent_usd, report.fleet.reserved_usd
    assert spent + held <= LIMIT + 1e-9
    assert all(r[0] > 0 for r in results), "some worker never met the limit: test too weak"
    # Settling twice charged once: the ledger holds exactly what the workers settled.
    assert spent == pytest.approx(sum(r[1] for r in results), abs=1e-6)
    assert held == pytest.approx(sum(r[2] for r in results), abs=1e-6)
    assert sum(s.spent_usd for s in report.by("tenant").values()) == pytest.approx(spent)


def test_a_call_that_cost_more_than_its_hold_is_charged_in_full_as_overrun(
    client: redis.Redis,
) -> None:
    ledger = Ledger(client)
    scopes = _scopes(SpendSettings(daily_usd=1.0))
    assert ledger.reserve("c1", 0.40, 100, scopes, model="m", now=NOW).ok
    assert ledger.settle("c1", 0.70, 100, now=NOW).applied
    fleet = ledger.spend_report("day", NOW).fleet
    assert fleet.spent_usd == pytest.approx(0.70) and fleet.reserved_usd == 0
    assert fleet.overrun_usd == pytest.approx(0.30)
    # Spend now stands past what was held: the scope's next calls see it.
    assert not ledger.reserve("c2", 0.35, 100, scopes, model="m", now=NOW).ok
    assert ledger.reserve("c3", 0.30, 100, scopes, model="m", now=NOW).ok


def test_a_call_without_the_fleet_scope_or_any_limit_is_still_counted(
    client: redis.Redis,
) -> None:
    ledger = Ledger(client)
    only = [Scope(ScopeKind.TENANT, "solo")]
    assert ledger.reserve("s1", 0.05, 10, only, now=NOW).ok
    # Its first counter holds it, so each window exists and keeps its TTL for settlement.
    hour = keys.spend_window("h", "2026112522")
    assert client.ttl(hour) > 0
    assert ledger.spend_report("hour", NOW).by("tenant")["solo"].reserved_usd == pytest.approx(0.05)
    assert ledger.settle("s1", 0.03, 5, now=NOW + 1).applied
    for window in ("hour", "day"):
        solo = ledger.spend_report(window, NOW).by("tenant")["solo"]
        assert (solo.spent_usd, solo.reserved_usd, solo.calls) == (pytest.approx(0.03), 0, 1)
