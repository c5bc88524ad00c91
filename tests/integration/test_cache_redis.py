"""The result cache and its single flight, against a real Redis that these tests started."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from typing import Any

import pytest
import redis

from fleetline.shared import keys
from fleetline.shared.cache import Hit, Lease, ResultCache, Wait, cache_key, parse_lookup
from fleetline.shared.round_trip import RoundTrip

pytestmark = pytest.mark.integration

OUTPUT = {"entities": ["Acme"], "summary": "Acme grew."}


@pytest.fixture
def url(redis_url: str) -> str:
    """A database of its own on the Redis these tests started (tests/integration/conftest)."""
    return redis_url


@pytest.fixture
def client(redis_client: redis.Redis) -> redis.Redis:
    return redis_client


def _key(tenant: str, *, shared: bool = False) -> str:
    return cache_key("extraction", "sim-small", "v1", "Acme grew.", tenant, shared=shared)


def test_an_entry_is_served_to_its_own_tenant_only(client: redis.Redis) -> None:
    cache = ResultCache(client)
    lease = cache.lookup_or_lease(_key("a"), 5000)
    assert isinstance(lease, Lease)
    assert cache.store(_key("a"), OUTPUT, 0.002, 60, lease.token, model="sim-small")
    hit = cache.lookup_or_lease(_key("a"), 5000)
    assert isinstance(hit, Hit)
    assert (hit.output, hit.cost_usd, hit.model) == (OUTPUT, 0.002, "sim-small")
    # Tenant b asks the same question: a miss (it gets its own lease), never a's answer.
    assert isinstance(cache.lookup_or_lease(_key("b"), 5000), Lease)
    assert cache.get(_key("b")) is None


def test_a_shared_entry_is_served_to_every_tenant(client: redis.Redis) -> None:
    cache = ResultCache(client)
    lease = cache.lookup_or_lease(_key("a", shared=True), 5000)
    assert isinstance(lease, Lease)
    cache.store(_key("a", shared=True), OUTPUT, 0.002, 60, lease.token)
    hit = cache.lookup_or_lease(_key("b", shared=True), 5000)
    assert isinstance(hit, Hit)
    assert hit.output == OUTPUT


def test_entries_expire_after_their_worker_types_ttl(client: redis.Redis) -> None:
    cache = ResultCache(client)
    lease = cache.lookup_or_lease(_key("a"), 5000)
    assert isinstance(lease, Lease)
    cache.store(_key("a"), OUTPUT, 0.002, 90, lease.token)
    assert 89_000 < client.pttl(keys.cache_entry(_key("a"))) <= 90_000
    assert client.exists(keys.cache_lease(_key("a"))) == 0


def test_a_waiter_takes_over_when_the_lease_holder_dies(client: redis.Redis, url: str) -> None:
    cache = ResultCache(client)
    ctx = multiprocessing.get_context("spawn")
    holder = ctx.Process(target=take_lease_and_die, args=(url, _key("a"), 400))
    holder.start()
    holder.join(timeout=30)
    waited = cache.lookup_or_lease(_key("a"), 400)
    assert isinstance(waited, Wait)
    taken = cache.wait_for(_key("a"), timeout_s=5, lease_ms=5000)
    assert isinstance(taken, Lease)


def test_an_abandoned_lease_passes_on_at_once(client: redis.Redis) -> None:
    cache = ResultCache(client)
    lease = cache.lookup_or_lease(_key("a"), 60_000)
    assert isinstance(lease, Lease)
    assert isinstance(cache.lookup_or_lease(_key("a"), 60_000), Wait)
    assert not cache.abandon(_key("a"), "someone-else")
    assert cache.abandon(_key("a"), lease.token)
    assert isinstance(cache.lookup_or_lease(_key("a"), 60_000), Lease)


def test_a_waiter_gives_up_at_its_own_timeout(client: redis.Redis) -> None:
    cache = ResultCache(client)
    assert isinstance(cache.lookup_or_lease(_key("a"), 60_000), Lease)
    started = time.monotonic()
    assert isinstance(cache.wait_for(_key("a"), timeout_s=0.2, lease_ms=60_000), Wait)
    assert time.monotonic() - started < 2


def test_the_lookup_can_ride_a_round_trip(client: redis.Redis) -> None:
    cache = ResultCache(client)
    trip = RoundTrip(client)
    trip.queue("PING")
    first = cache.queue_lookup(trip, _key("a"), 5000)
    second = cache.queue_lookup(trip, _key("a"), 5000)
    replies = trip.execute()
    assert isinstance(parse_lookup(replies[first]), Lease)
    assert isinstance(parse_lookup(replies[second]), Wait)


# -- single flight across threads and processes -------------------------------------------------


def take_lease_and_die(url: str, key: str, lease_ms: int) -> None:
    client = redis.Redis.from_url(url)
    assert isinstance(ResultCache(client).lookup_or_lease(key, lease_ms), Lease)
    os._exit(0)  # a worker killed mid-call: no store, no abandon


def ask(url: str, key: str, start: Any) -> str:
    """One caller of the cached call: 'lease' if it made the provider call, else 'hit'."""
    client = redis.Redis.from_url(url)
    cache = ResultCache(client)
    try:
        start.wait(timeout=60)
        found = cache.lookup_or_lease(key, 5000)
        if isinstance(found, Wait):
            found = cache.wait_for(key, timeout_s=20, lease_ms=5000)
        if isinstance(found, Lease):
            time.sleep(0.3)  # the provider call
            cache.store(key, OUTPUT, 0.002, 60, found.token)
            return "lease"
        assert isinstance(found, Hit), found
        assert found.output == OUTPUT
        return "hit"
    finally:
        client.close()


def ask_in_threads(url: str, key: str, n: int, start: Any, out: Any) -> None:
    answers: list[str] = []
    threads = [
        threading.Thread(target=lambda: answers.append(ask(url, key, start))) for _ in range(n)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put(answers)


def test_identical_calls_across_processes_make_one_provider_call(url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    n_local, n_procs, per_proc = 6, 2, 4
    start = ctx.Barrier(n_local + n_procs * per_proc)
    out = ctx.Queue()
    key = _key("a")
    procs = [
        ctx.Process(target=ask_in_threads, args=(url, key, per_proc, start, out))
        for _ in range(n_procs)
    ]
    for proc in procs:
        proc.start()
    answers: list[str] = []
    threads = [
        threading.Thread(target=lambda: answers.append(ask(url, key, start)))
        for _ in range(n_local)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in procs:
        answers += out.get(timeout=60)
    for proc in procs:
        proc.join(timeout=10)
        assert proc.exitcode == 0
    assert len(answers) == n_local + n_procs * per_proc
    assert answers.count("lease") == 1
    assert answers.count("hit") == len(answers) - 1
