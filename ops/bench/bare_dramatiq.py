"""The peer: the same fan-out/fan-in with Dramatiq (group + completion callback).

Workers run `python -m dramatiq ops.bench.bare_dramatiq`; the broker, the Results
middleware and the group barrier all live on `BENCH_DRAMATIQ_URL` (its own database on
the benchmark's Redis server). Building the broker opens no connection.
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import GroupCallbacks
from dramatiq.rate_limits.backends import RedisBackend as RateLimiterRedis
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend as ResultsRedis

from ops.bench.bare_celery import record_done

URL = os.environ.get("BENCH_DRAMATIQ_URL", "redis://127.0.0.1:6399/0")
RESULT_TTL_MS = int(os.environ.get("BENCH_RESULT_EXPIRES_S", "86400")) * 1000


def make_broker(url: str) -> RedisBroker:
    """A Redis broker with results and group completion callbacks."""
    broker = RedisBroker(url=url)  # type: ignore[no-untyped-call]
    results = Results(backend=ResultsRedis(url=url), result_ttl=RESULT_TTL_MS)  # type: ignore[no-untyped-call]
    broker.add_middleware(results)
    broker.add_middleware(GroupCallbacks(RateLimiterRedis(url=url)))
    return broker


broker = make_broker(URL)
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="bench_noop", store_results=True, max_retries=0)
def noop(i: int) -> dict[str, Any]:
    return {"i": i, "ok": True}


@dramatiq.actor(actor_name="bench_done", max_retries=0)
def done(job: str, counter: str, times: str) -> None:
    # A group callback gets no results (Dramatiq's design); it only marks completion.
    record_done(URL, counter, times, job)
