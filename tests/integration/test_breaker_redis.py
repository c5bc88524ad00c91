"""Fleet-wide circuit breakers against a real redis-server these tests start.

Each test gets a database of its own on one server; several processes (spawned, each with
its own client) stand in for the fleet.
"""

from __future__ import annotations

import itertools
import multiprocessing
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pybreaker
import pytest
import redis

from fleetline.shared import keys
from fleetline.shared.breakers import (
    BreakerSettings,
    BreakerState,
    FleetBreaker,
    RedisBreakers,
    Result,
    Transition,
    breaker_redis,
)
from fleetline.shared.embedded_redis import EmbeddedRedis, free_port, start_redis
from fleetline.shared.errors import ProviderServerError
from fleetline.shared.round_trip import RoundTrip

pytestmark = pytest.mark.integration

NAME = "extraction:sim-small"
_databases = itertools.count(1)


def settings(**overrides: Any) -> BreakerSettings:
    values: dict[str, Any] = {
        "window_s": 1.0,
        "buckets": 10,
        "min_calls": 10,
        "failure_rate": 0.5,
        "reset_timeout_s": 0.3,
        "probe_timeout_s": 30,
    }
    return BreakerSettings(**{**values, **overrides})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    srv = start_redis(tmp_path_factory.mktemp("breaker-redis"), databases=64)
    yield srv
    srv.stop()


@pytest.fixture
def url(server: EmbeddedRedis) -> str:
    return f"redis://127.0.0.1:{server.port}/{next(_databases)}"


@pytest.fixture
def make(url: str) -> Iterator[Any]:
    """RedisBreakers on this test's database, each with its own client (as a process has)."""
    clients: list[redis.Redis] = []

    def build(decode_responses: bool = False, **overrides: Any) -> RedisBreakers:
        s = settings(**overrides)
        client = breaker_redis(url, s, decode_responses=decode_responses)
        clients.append(client)
        return RedisBreakers(client, s)

    yield build
    for client in clients:
        client.close()


def fail(b: RedisBreakers, n: int, name: str = NAME) -> None:
    for _ in range(n):
        b.record_failure(name)


def succeed(b: RedisBreakers, n: int, name: str = NAME) -> None:
    for _ in range(n):
        b.record_success(name)


# --- opening on a failure rate ------------------------------------------------------------


def test_opens_on_the_failure_rate_once_min_calls_are_in(make: Any) -> None:
    b = make()
    succeed(b, 5)
    fail(b, 4)
    assert b.snapshot(NAME).state is BreakerState.CLOSED  # 9 calls < min_calls
    recorded = b.record_failure(NAME)  # 5 of 10 failed: 50 %
    assert (recorded.transition, recorded.calls, recorded.failures) == (Transition.OPENED, 10, 5)
    permit = b.allow(NAME)
    assert not permit.allowed and permit.state is BreakerState.OPEN
    assert 0 < permit.retry_after_s <= 0.3
    snap = b.snapshot(NAME)
    assert (snap.state, snap.calls, snap.failures, snap.failure_rate) == ("open", 10, 5, 0.5)
    assert snap.opened_at is not None and snap.half_open_in_s is not None
    assert snap.trips == 1


def test_does_not_open_below_min_calls_or_below_the_rate(make: Any) -> None:
    b = make()
    fail(b, 9)
    assert b.allow(NAME).allowed
    succeed(b, 20)
    fail(b, 4)  # 13 of 33 failed
    snap = b.snapshot(NAME)
    assert (snap.state, snap.calls, snap.failures) == (BreakerState.CLOSED, 33, 13)


def test_an_old_failure_slides_out_of_the_window(make: Any) -> None:
    b = make(min_calls=4)
    fail(b, 3)
    time.sleep(1.2)  # the window is 1 s
    recorded = b.record_failure(NAME)
    assert (recorded.state, recorded.calls, recorded.failures) == (BreakerState.CLOSED, 1, 1)
    fail(b, 2)
    assert b.record_failure(NAME).transition is Transition.OPENED  # 4 recent failures


# --- half-open: one probe for the whole fleet -------------------------------------------


def test_exactly_one_of_many_threads_gets_the_probe(make: Any) -> None:
    b = make(reset_timeout_s=0.2)
    b.force(NAME, BreakerState.OPEN)
    results: list[tuple[int, int]] = []
    start = threading.Barrier(16)

    def hammer() -> None:
        own = make()  # each thread its own client: no shared connection
        start.wait()
        results.append(_attempts(own, time.time() + 0.6))

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(p for p, _ in results) == 1
    assert sum(r for _, r in results) > 16  # the others were refused while it ran


def _attempts(b: RedisBreakers, until: float) -> tuple[int, int]:
    """Ask for permits until `until`: (probe permits got, half-open refusals)."""
    probes = refused = 0
    while time.time() < until:
        permit = b.allow(NAME)
        probes += permit.is_probe
        refused += permit.state is BreakerState.HALF_OPEN and not permit.allowed
    return probes, refused


def _process_attempts(url: str, barrier: Any, until_after_s: float, out: Any) -> None:
    s = settings(reset_timeout_s=0.2)
    client = breaker_redis(url, s)
    b = RedisBreakers(client, s)
    b.allow(NAME)  # scripts loaded, connection open
    barrier.wait()
    out.put(_attempts(b, time.time() + until_after_s))
    client.close()


def test_exactly_one_of_several_processes_gets_the_probe(make: Any, url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(5)
    out = ctx.Queue()
    procs = [ctx.Process(target=_process_attempts, args=(url, barrier, 1.0, out)) for _ in range(4)]
    for p in procs:
        p.start()
    barrier.wait(timeout=60)
    make(reset_timeout_s=0.2).force(NAME, BreakerState.OPEN)
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert sum(p for p, _ in results) == 1
    assert all(r > 0 for _, r in results)  # every process was refused while it ran


def test_probe_success_closes_and_empties_the_window(make: Any) -> None:
    b, other = make(), make()
    fail(b, 10)
    time.sleep(0.35)
    probe = b.allow(NAME)
    assert probe.is_probe and probe.state is BreakerState.HALF_OPEN
    assert not other.allow(NAME).allowed
    assert other.record_success(NAME).transition is None  # not the probe: moves nothing
    assert b.snapshot(NAME).probe_in_flight
    assert b.record_success(NAME, probe).transition is Transition.CLOSED
    snap = other.snapshot(NAME)
    assert (snap.state, snap.calls, snap.failures) == (BreakerState.CLOSED, 0, 0)
    assert other.allow(NAME).allowed


def test_probe_failure_reopens_for_a_fresh_timeout(make: Any) -> None:
    b = make()
    fail(b, 10)
    time.sleep(0.35)
    b.allow(NAME)
    recorded = b.record_failure(NAME)  # no permit passed: the probe this process holds
    assert recorded.transition is Transition.REOPENED
    permit = b.allow(NAME)
    assert permit.state is BreakerState.OPEN and permit.retry_after_s > 0.2
    assert b.snapshot(NAME).trips == 2


def test_a_dead_probes_lease_expires(make: Any) -> None:
    b = make(probe_timeout_s=0.3)
    fail(b, 10)
    time.sleep(0.35)
    dead = b.allow(NAME)  # its process "dies": no result ever comes
    assert dead.is_probe
    refused = b.allow(NAME)
    assert refused.state is BreakerState.HALF_OPEN and not refused.allowed
    time.sleep(0.35)
    second = make(probe_timeout_s=0.3).allow(NAME)
    assert second.is_probe and second.token != dead.token
    assert b.record_success(NAME, dead).transition is None  # too late to decide
    assert b.snapshot(NAME).state is BreakerState.HALF_OPEN


def test_a_released_probe_lets_the_next_caller_probe(make: Any) -> None:
    b = make()
    b.force(NAME, BreakerState.HALF_OPEN)
    probe = b.allow(NAME)
    assert b.release(probe).transition is Transition.RELEASED
    assert make().allow(NAME).is_probe
    assert b.snapshot(NAME).calls == 0


# --- Redis down -------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "allowed"), [("fail_open", True), ("fail_closed", False)])
def test_redis_refusing_connections_is_decided_by_the_policy(policy: str, allowed: bool) -> None:
    s = settings(on_redis_down=policy)
    client = breaker_redis(f"redis://127.0.0.1:{free_port()}/0", s)
    b = RedisBreakers(client, s)
    started = time.monotonic()
    permit = b.allow(NAME)
    assert time.monotonic() - started < 1.0
    assert permit.unavailable and permit.allowed is allowed
    assert b.record_failure(NAME, permit).unavailable
    cb = FleetBreaker(b, NAME)
    if allowed:
        assert cb.call(lambda: "ran") == "ran"
    else:
        with pytest.raises(pybreaker.CircuitBreakerError, match="fail_closed"):
            cb.call(lambda: "ran")
    assert cb.current_state == ("closed" if allowed else "open")
    client.close()


@pytest.mark.parametrize(("policy", "allowed"), [("fail_open", True), ("fail_closed", False)])
def test_a_redis_that_never_answers_is_decided_within_a_second(policy: str, allowed: bool) -> None:
    # A listening socket nobody reads from: connect succeeds, the reply never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        s = settings(on_redis_down=policy, redis_down_recheck_s=0)
        client = breaker_redis(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", s)
        b = RedisBreakers(client, s)
        for _ in range(2):
            started = time.monotonic()
            permit = b.allow(NAME)
            assert time.monotonic() - started < 1.0
            assert permit.unavailable and permit.allowed is allowed
        client.close()


# --- isolation, clients, pipelines, operators -----------------------------------------


def test_breakers_with_different_names_do_not_share_state(make: Any) -> None:
    b = make()
    fail(b, 10, "extraction:sim-small")
    succeed(b, 3, "extraction:sim-large")
    assert not b.allow("extraction:sim-small").allowed
    assert b.allow("extraction:sim-large").allowed
    assert b.allow("classification:sim-small").allowed
    large = b.snapshot("extraction:sim-large")
    assert (large.state, large.calls, large.failures) == (BreakerState.CLOSED, 3, 0)


def test_a_decode_responses_client_works(make: Any) -> None:
    b = make(decode_responses=True)
    fail(b, 10)
    assert b.allow(NAME).state is BreakerState.OPEN
    time.sleep(0.35)
    probe = b.allow(NAME)
    assert probe.is_probe and isinstance(probe.token, str)
    assert b.record_success(NAME, probe).transition is Transition.CLOSED
    assert [s.name for s in b.list_breakers()] == [NAME]
    assert FleetBreaker(b, NAME).current_state == "closed"


def test_pipeline_forms_share_one_round_trip(make: Any, url: str) -> None:
    b = make()
    other = redis.Redis.from_url(url)
    try:
        other.script_flush()  # the trip must repair a lost script on its own
        trip = RoundTrip(other)
        trip.queue("INCR", "unrelated")
        i = b.queue_allow(trip, NAME)
        j = b.queue_record(trip, NAME, Result.FAILURE)
        replies = trip.execute()
        permit, recorded = b.parse_allow(NAME, replies[i]), b.parse_record(NAME, replies[j])
        assert permit.allowed and recorded.calls == 1
        again = RoundTrip(other)
        k = b.queue_record(again, NAME, Result.SUCCESS, permit)
        assert b.parse_record(NAME, again.execute()[k]).calls == 2
    finally:
        other.close()


def test_fleet_breaker_sees_another_processes_trip(make: Any) -> None:
    changes: list[str] = []

    class Listener(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: Any, old: Any, new: Any) -> None:
            changes.append(new.name)

    here = FleetBreaker(make(), NAME, listeners=[Listener()])
    there = FleetBreaker(make(), NAME)

    def boom() -> None:
        raise ProviderServerError()

    for _ in range(9):
        with pytest.raises(ProviderServerError):
            there.call(boom)
    with pytest.raises(pybreaker.CircuitBreakerError, match="opened"):
        there.call(boom)
    with pytest.raises(pybreaker.CircuitBreakerError):
        here.call(lambda: 1)
    assert changes == ["open"]
    assert here.fail_counter == 10
    time.sleep(0.35)
    assert here.call(lambda: "probe") == "probe"
    assert there.current_state == "closed"
    assert changes == ["open", "half-open", "closed"]


def test_every_key_expires_and_the_cli_views_work(make: Any, url: str) -> None:
    b = make()
    fail(b, 10)
    succeed(b, 1, "analysis:sim-large")
    b.force("analysis:sim-large", BreakerState.HALF_OPEN)
    b.allow("analysis:sim-large")
    raw = redis.Redis.from_url(url)
    try:
        found = raw.keys("*")
        assert found
        for key in found:
            assert raw.pttl(key) > 0, key
        assert raw.ttl(keys.breaker(NAME)) <= keys.BREAKER_IDLE_TTL_S
        assert raw.pttl(keys.breaker_window(NAME)) <= 1100
    finally:
        raw.close()
    listed = {s.name: s for s in b.list_breakers()}
    assert listed[NAME].state is BreakerState.OPEN
    assert listed["analysis:sim-large"].probe_in_flight
    assert b.reset(NAME) is BreakerState.OPEN
    assert b.snapshot(NAME).state is BreakerState.CLOSED
    assert b.allow(NAME).allowed


def test_scripts_redis_lost_are_loaded_again(make: Any, url: str) -> None:
    b = make()
    fail(b, 10)
    flusher = redis.Redis.from_url(url)
    flusher.script_flush()
    flusher.close()
    assert make().allow(NAME).state is BreakerState.OPEN  # NOSCRIPT is reloaded
