"""A step's closing round trip run again after Redis lost its reply counts once.

`record()` re-runs `SubtaskRun.finish()` through an outage: every write of that trip runs
a second time. The breaker's result and the cache saving carry the delivery as a
once-marker, so the second run changes no counter; another delivery still counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from fleetline.shared import keys
from fleetline.shared.breakers import (
    BreakerSettings,
    BreakerState,
    Permit,
    Recorded,
    RedisBreakers,
    Result,
    Transition,
    breaker_name,
)
from fleetline.shared.errors import ProviderServerError
from fleetline.shared.ledger import Ledger, Scope, SpendSettings, scopes_for
from fleetline.shared.round_trip import RoundTrip, one_reply
from fleetline.shared.schemas import OutcomeStatus, SubtaskPayload, SubtaskSpec
from fleetline.shared.settings import load_settings
from fleetline.workers.guards import BreakerGuard, CacheGuard, Guard
from fleetline.workers.run import Attempt, SubtaskRun
from fleetline.workers.runtime import build_runtime
from fleetline.workers.task import record

pytestmark = pytest.mark.integration

NAME = "extraction:sim-small"
NOW = datetime(2026, 11, 25, 22, 30, tzinfo=UTC).timestamp()
OUTPUT = {"entities": ["Acme Corp"], "figures": ["12%"], "gist": "Acme grew."}


def _breakers(client: redis.Redis) -> RedisBreakers:
    # Two failures in two calls open it: one failure counted twice would.
    return RedisBreakers(client, BreakerSettings(min_calls=2, failure_rate=0.5))


def _closing_record(
    breakers: RedisBreakers, result: Result, permit: Permit, delivery: str
) -> Recorded:
    """One closing trip holding the breaker's result, executed on its own."""
    reply = one_reply(
        breakers.client,
        lambda trip: breakers.queue_record(trip, NAME, result, permit, once=delivery),
    )
    return breakers.parse_record(NAME, reply)


def _scopes() -> list[Scope]:
    return scopes_for(SpendSettings(), job_id="j1", tenant="acme", worker_type="extraction")


def _closing_saving(ledger: Ledger, client: redis.Redis, usd: float, delivery: str) -> None:
    """One closing trip holding a cache saving, executed on its own."""
    trip = RoundTrip(client)
    ledger.queue_record_saving(trip, "cache", usd, _scopes(), NOW, model="sim-small", once=delivery)
    trip.execute()


# --- breaker results ------------------------------------------------------------------------


def test_a_failure_queued_twice_by_one_delivery_counts_once(redis_client: redis.Redis) -> None:
    breakers = _breakers(redis_client)
    permit = breakers.allow(NAME)
    first = _closing_record(breakers, Result.FAILURE, permit, "delivery-1")
    again = _closing_record(breakers, Result.FAILURE, permit, "delivery-1")
    assert again == first, "the retried trip replays the first reply"
    snapshot = breakers.snapshot(NAME)
    assert (snapshot.calls, snapshot.failures) == (1, 1)
    assert snapshot.state is BreakerState.CLOSED, "one failure in one call must not open it"


def test_failures_of_two_deliveries_still_count_twice(redis_client: redis.Redis) -> None:
    breakers = _breakers(redis_client)
    _closing_record(breakers, Result.FAILURE, breakers.allow(NAME), "delivery-1")
    second = _closing_record(breakers, Result.FAILURE, breakers.allow(NAME), "delivery-2")
    assert second.transition is Transition.OPENED
    snapshot = breakers.snapshot(NAME)
    assert (snapshot.calls, snapshot.failures, snapshot.state) == (2, 2, BreakerState.OPEN)


def test_a_probe_success_retried_closes_once_and_counts_nothing_more(
    redis_client: redis.Redis,
) -> None:
    breakers = _breakers(redis_client)
    breakers.force(NAME, BreakerState.HALF_OPEN)
    probe = breakers.allow(NAME)
    assert probe.is_probe
    first = _closing_record(breakers, Result.SUCCESS, probe, "delivery-1")
    again = _closing_record(breakers, Result.SUCCESS, probe, "delivery-1")
    assert first.transition is Transition.CLOSED and again == first
    snapshot = breakers.snapshot(NAME)
    # The probe's success emptied the window; its retry must not start refilling it.
    assert (snapshot.state, snapshot.calls) == (BreakerState.CLOSED, 0)


def test_a_probe_failure_retried_reopens_once(redis_client: redis.Redis) -> None:
    breakers = _breakers(redis_client)
    breakers.force(NAME, BreakerState.HALF_OPEN)
    probe = breakers.allow(NAME)
    trips = breakers.snapshot(NAME).trips
    first = _closing_record(breakers, Result.FAILURE, probe, "delivery-1")
    again = _closing_record(breakers, Result.FAILURE, probe, "delivery-1")
    assert first.transition is Transition.REOPENED and again == first
    snapshot = breakers.snapshot(NAME)
    assert (snapshot.state, snapshot.trips) == (BreakerState.OPEN, trips + 1)
    assert (snapshot.calls, snapshot.failures) == (1, 1)
    assert not breakers.allow(NAME).allowed, "the fresh reset timeout still runs"


def test_a_released_probe_retried_frees_only_its_own_lease(redis_client: redis.Redis) -> None:
    breakers = _breakers(redis_client)
    breakers.force(NAME, BreakerState.HALF_OPEN)
    probe = breakers.allow(NAME)
    assert _closing_record(breakers, Result.RELEASE, probe, "d1").transition is Transition.RELEASED
    successor = breakers.allow(NAME)
    assert successor.is_probe
    assert _closing_record(breakers, Result.RELEASE, probe, "d1").transition is None
    assert not breakers.allow(NAME).allowed, "the successor's probe is still in flight"
    assert breakers.snapshot(NAME).calls == 0


# --- cache savings --------------------------------------------------------------------------


def test_a_cache_saving_queued_twice_by_one_delivery_counts_once(
    redis_client: redis.Redis,
) -> None:
    ledger = Ledger(redis_client)
    _closing_saving(ledger, redis_client, 0.03, "delivery-1")
    _closing_saving(ledger, redis_client, 0.03, "delivery-1")
    report = ledger.spend_report("hour", NOW)
    assert report.saved_by_cache == pytest.approx(0.03)
    assert report.by("model")["sim-small"].saved_cache_usd == pytest.approx(0.03)
    assert report.by("tenant")["acme"].saved_cache_usd == pytest.approx(0.03)
    assert ledger.job_spend("j1").saved_cache_usd == pytest.approx(0.03)


def test_cache_savings_of_two_deliveries_still_count_twice(redis_client: redis.Redis) -> None:
    ledger = Ledger(redis_client)
    _closing_saving(ledger, redis_client, 0.03, "delivery-1")
    _closing_saving(ledger, redis_client, 0.03, "delivery-2")
    assert ledger.spend_report("day", NOW).saved_by_cache == pytest.approx(0.06)
    assert ledger.job_spend("j1").saved_cache_usd == pytest.approx(0.06)


def test_a_saving_without_a_marker_counts_every_time(redis_client: redis.Redis) -> None:
    ledger = Ledger(redis_client)
    ledger.record_saving("cache", 0.01, _scopes(), NOW)
    ledger.record_saving("cache", 0.01, _scopes(), NOW)
    assert ledger.spend_report("hour", NOW).saved_by_cache == pytest.approx(0.02)
    assert not list(redis_client.scan_iter(keys.spend_saving_once("*", "*")))


def test_the_once_markers_expire(redis_client: redis.Redis) -> None:
    breakers = _breakers(redis_client)
    _closing_record(breakers, Result.SUCCESS, breakers.allow(NAME), "delivery-1")
    _closing_saving(Ledger(redis_client), redis_client, 0.03, "delivery-1")
    markers = [
        keys.breaker_result_once(NAME, "delivery-1"),
        keys.spend_saving_once("delivery-1", "cache"),
    ]
    for marker in markers:
        assert 0 < redis_client.ttl(marker) <= keys.CLOSING_ONCE_TTL_S, marker


def test_a_workers_once_markers_live_through_its_outage_grace(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETLINE_REDIS_OUTAGE_GRACE_S", "200")
    runtime = build_runtime(load_settings())  # on the test's Redis (FLEETLINE_REDIS_URL)
    _closing_record(runtime.breakers, Result.SUCCESS, runtime.breakers.allow(NAME), "d2")
    _closing_saving(runtime.ledger, redis_client, 0.03, "d2")
    grace_and_margin = 200 + keys.CLOSING_ONCE_MARGIN_S
    for marker in (keys.breaker_result_once(NAME, "d2"), keys.spend_saving_once("d2", "cache")):
        assert grace_and_margin - 5 < redis_client.ttl(marker) <= grace_and_margin, marker


# --- through SubtaskRun.finish(), re-run by record() after a lost reply ---------------------


def _run(guard: Guard) -> SubtaskRun:
    settings = load_settings()
    spec = SubtaskSpec(id="extract-a", worker_type="extraction", tier="cheap", text="Acme.")
    payload = SubtaskPayload(job_id="j1", tenant="t1", deadline_at=time.time() + 30, subtask=spec)
    return SubtaskRun(
        payload=payload,
        worker=settings.fleet.agents["extraction"],
        runtime=build_runtime(settings),
        attempt=Attempt(number=1, started_at=time.time()),
        guards=[guard],
    )


def _lose_the_first_reply(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every trip runs; the first one's reply is lost, as when Redis fails right after it
    applied the trip. Returns the list of executed trips (their sizes)."""
    executed: list[int] = []
    real: Callable[..., list[Any]] = RoundTrip.execute

    def execute(trip: RoundTrip, raise_on_error: bool = True) -> list[Any]:
        replies = real(trip, raise_on_error)
        executed.append(len(replies))
        if len(executed) == 1:
            raise redis.ConnectionError("connection lost before the reply came")
        return replies

    monkeypatch.setattr(RoundTrip, "execute", execute)
    return executed


def test_a_finish_run_again_counts_the_breaker_failure_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _run(BreakerGuard())
    assert run.before() is None
    run.called = True  # the provider was called and failed
    failed = run.failure(ProviderServerError("503"))
    executed = _lose_the_first_reply(monkeypatch)
    assert record(run, failed).status is OutcomeStatus.FAILED
    assert len(executed) == 2, "through_outage ran the closing trip again"
    snapshot = run.runtime.breakers.snapshot(breaker_name("extraction", run.model))
    assert (snapshot.calls, snapshot.failures) == (1, 1)


def test_a_finish_run_again_counts_the_cache_saving_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _run(CacheGuard())
    assert first.before() is None, "a miss: this delivery holds the lease"
    answered = first.outcome(OutcomeStatus.OK, output=OUTPUT, model=first.model, cost_usd=0.004)
    first.finish(answered)  # stores the entry
    second = _run(CacheGuard())
    hit = second.before()
    assert hit is not None and hit.cached
    executed = _lose_the_first_reply(monkeypatch)
    assert record(second, hit).cached
    assert len(executed) == 2, "through_outage ran the closing trip again"
    assert second.runtime.ledger.spend_report("day").saved_by_cache == pytest.approx(0.004)
