"""Spend kill switches against a real Redis that these tests started."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis

from fleetline.shared import keys
from fleetline.shared.embedded_redis import EmbeddedRedis, start_redis
from fleetline.shared.killswitch import KillSwitches, parse_active_for
from fleetline.shared.ledger import Ledger, SpendSettings, Window, scopes_for
from fleetline.shared.round_trip import RoundTrip

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 25, 22, 59, 0, tzinfo=UTC).timestamp()
END_OF_HOUR = datetime(2026, 11, 25, 23, 0, 0, tzinfo=UTC).timestamp()
END_OF_DAY = datetime(2026, 11, 26, 0, 0, 0, tzinfo=UTC).timestamp()
_dbs = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    started = start_redis(tmp_path_factory.mktemp("kill-redis"), databases=64)
    yield started
    started.stop()


@pytest.fixture
def client(server: EmbeddedRedis) -> Iterator[redis.Redis]:
    opened = redis.Redis.from_url(f"redis://127.0.0.1:{server.port}/{next(_dbs)}")
    yield opened
    opened.close()


def test_a_switch_expires_at_the_end_of_its_window(client: redis.Redis) -> None:
    switches = KillSwitches(client)
    state = switches.trip("tenant:acme", "hour", "runaway agent", now=NOW)
    assert state is not None
    assert state.resets_at == END_OF_HOUR
    # The key's expiry is the reset: 60 s from 22:59:00 to 23:00:00.
    ttl_ms = client.pttl(keys.kill_switch("tenant:acme", "h"))
    assert 59_000 < ttl_ms <= 60_000
    switches.trip("fleet", Window.DAY, "daily budget", now=NOW)
    day_ttl = client.ttl(keys.kill_switch("fleet", "d"))
    assert END_OF_DAY - NOW - 2 <= day_ttl <= END_OF_DAY - NOW


def test_status_lists_tripped_switches_with_their_reset_time(client: redis.Redis) -> None:
    switches = KillSwitches(client)
    assert switches.status(now=NOW) == []
    switches.trip("fleet", "day", "daily budget", now=NOW)
    switches.trip("worker_type:analysis", "hour", "loop", now=NOW)
    listed = switches.status(now=NOW)
    assert [(s.scope, s.window, s.resets_at) for s in listed] == [
        ("worker_type:analysis", Window.HOUR, END_OF_HOUR),
        ("fleet", Window.DAY, END_OF_DAY),
    ]
    assert all(s.tripped and s.tripped_at == NOW for s in listed)
    assert listed[0].reason == "loop"
    assert switches.reset("worker_type:analysis", "hour")
    assert not switches.reset("worker_type:analysis", "hour")
    assert [s.scope for s in switches.status(now=NOW)] == ["fleet"]


def test_a_switch_resets_itself_when_the_window_rolls_over(client: redis.Redis) -> None:
    switches = KillSwitches(client)
    just_before = END_OF_HOUR - 0.3
    switches.trip("tenant:acme", "hour", "limit", now=just_before)
    assert switches.active_for("acme", None, now=just_before) is not None
    time.sleep(0.5)
    assert switches.active_for("acme", None, now=just_before) is None
    assert switches.status(now=just_before) == []


def test_active_for_finds_only_the_switches_that_apply(client: redis.Redis) -> None:
    switches = KillSwitches(client)
    switches.trip("tenant:acme", "day", "acme over budget", now=NOW)
    switches.trip("worker_type:analysis", "hour", "analysis loop", now=NOW)
    found = switches.active_for("acme", "extraction", now=NOW)
    assert found is not None
    assert found.scope == "tenant:acme"
    assert switches.active_for("zeta", "extraction", now=NOW) is None
    found = switches.active_for("zeta", "analysis", now=NOW)
    assert found is not None
    assert found.reason == "analysis loop"
    switches.trip("fleet", "hour", "fleet limit", now=NOW)
    # The round-trip form: one MGET queued with the other guards.
    trip = RoundTrip(client)
    trip.queue("PING")
    index = switches.queue_active_for(trip, "zeta", None)
    found = parse_active_for(trip.execute()[index], now=NOW)
    assert found is not None
    assert found.scope == "fleet"


def test_check_and_trip_trips_scopes_whose_spend_reached_their_limit(
    client: redis.Redis,
) -> None:
    ledger, switches = Ledger(client), KillSwitches(client)
    limits = SpendSettings(daily_usd=100, tenant_hourly_usd={"acme": 0.05})
    for n, tenant in enumerate(["acme", "zeta"]):
        scopes = scopes_for(limits, job_id=f"j{n}", tenant=tenant, worker_type="analysis")
        assert ledger.reserve(f"c{n}", 0.05, 100, scopes, now=NOW).ok
        assert ledger.settle(f"c{n}", 0.05, 100, now=NOW).applied
    reports = [ledger.spend_report(w, NOW) for w in Window]

    tripped = switches.check_and_trip(reports, limits, now=NOW)
    assert [(s.scope, s.window, s.resets_at) for s in tripped] == [
        ("tenant:acme", Window.HOUR, END_OF_HOUR)
    ]
    assert "hourly limit $0.05" in tripped[0].reason
    # Tripped already: the beat's next pass changes nothing, the first trip time stands.
    assert switches.check_and_trip(reports, limits, now=NOW + 15) == []
    assert [s.tripped_at for s in switches.status(now=NOW + 15)] == [NOW]
    # A report of a window that has ended trips nothing.
    switches.reset("tenant:acme", "hour")
    assert switches.check_and_trip(reports, limits, now=END_OF_HOUR + 1) == []
