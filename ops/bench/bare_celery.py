"""The baseline: the same fan-out/fan-in written with bare Celery and nothing of Fleetline.

Workers run `celery -A ops.bench.bare_celery worker ...` with the same pool, concurrency,
queues and flags as Fleetline's workers; the broker settings that matter for fairness
(JSON, late acks, prefetch 1, visibility timeout, connection pool size) are the same too.
The callback records completion the way the benchmark reads it: one INCR of a counter and
the wall-clock time per job, in one round trip.

The app reads `BENCH_REDIS_URL` (and `BENCH_RESULT_EXPIRES_S`, `BENCH_CONCURRENCY`) because
`celery -A` needs a module-level app; building it opens no connection.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import redis
from celery import Celery
from celery.backends.redis import RedisBackend
from kombu.entity import Exchange, Queue

# Fleetline's queues are its agents' names: these are the example fleet's four, copied
# (this app imports nothing of Fleetline). The chord body goes where Fleetline's fan-in does.
QUEUES = ("extraction", "classification", "analysis", "synthesis")
TASK_NOOP = "bench.noop"
TASK_SLEEP = "bench.sleep"
TASK_DONE = "bench.done"
# kombu's priority emulation as Fleetline configures it (shared/celery_app.py), and the
# priority Fleetline's producer gives a job of the default priority (9 - 5).
PRIORITY_STEPS = [0, 3, 6, 9]
PRIORITY = 4


class QuietRedisBackend(RedisBackend):  # type: ignore[misc]
    """Celery's Redis backend without per-task result subscriptions (for `send_only` apps).

    Four overrides anyone can write, the same as Fleetline's producer uses
    (`SendOnlyRedisBackend`): the bare producer never waits on an AsyncResult either, so
    both sides submit without a SUBSCRIBE per task. The workers keep the plain backend
    (a chord's results and its counter live there).
    """

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None

    def add_pending_result(
        self, result: Any, weak: bool = False, start_drainer: bool = True
    ) -> Any:
        return result

    def add_pending_results(self, results: Any, weak: bool = False) -> list[Any]:
        return list(results)

    def remove_pending_result(self, result: Any) -> Any:
        return result


def _queue(name: str) -> Queue:
    return Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]


def make_app(
    url: str, result_expires_s: int = 86_400, concurrency: int = 8, *, quiet: bool = False
) -> Celery:
    """A bare Celery app on `url`; `quiet` drops the producer's result subscriptions."""
    backend = f"{__name__}:QuietRedisBackend+{url}" if quiet else url
    app = Celery("bench-bare", broker=url, backend=backend)
    pool = max(200, concurrency * 2 + 10)
    transport = {
        "visibility_timeout": 3600,
        "max_connections": pool,
        "socket_timeout": 5.0,
        "socket_connect_timeout": 2.0,
        # As Fleetline's broker: four priority lists per queue, read in priority order.
        "priority_steps": PRIORITY_STEPS,
        "queue_order_strategy": "priority",
        "health_check_interval": 25,
    }
    app.conf.update(
        accept_content=["json"],
        result_accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        redis_max_connections=pool,
        result_expires=result_expires_s,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_queues=[_queue(q) for q in QUEUES],
        task_default_queue="synthesis",
    )
    return app


_local = threading.local()


def _redis(url: str) -> redis.Redis:
    # One client per process (a prefork child must not reuse its parent's socket).
    client: redis.Redis | None = getattr(_local, "client", None)
    if client is None or getattr(_local, "pid", None) != os.getpid():
        client = redis.Redis.from_url(url)
        _local.client, _local.pid = client, os.getpid()
    return client


def record_done(url: str, counter: str, times: str, job: str) -> None:
    """The completion mark the benchmark polls: INCR and the time, in one round trip."""
    pipe = _redis(url).pipeline(transaction=False)
    pipe.incr(counter)
    pipe.hset(times, job, repr(time.time()))
    pipe.execute()


def log_call(started: float) -> None:
    """One line per simulated call once it ends: its start (`t`, as the sim's call log has
    it) and its end, wall-clock seconds."""
    path = os.environ.get("BENCH_CALL_LOG")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f'{{"t": {started!r}, "end": {time.time()!r}}}\n'.encode())
    finally:
        os.close(fd)


def _register(app: Celery, url: str) -> None:
    @app.task(name=TASK_NOOP)  # type: ignore[untyped-decorator]
    def noop(i: int) -> dict[str, Any]:
        return {"i": i, "ok": True}

    @app.task(name=TASK_SLEEP)  # type: ignore[untyped-decorator]
    def sleep(i: int, ms: float) -> dict[str, Any]:
        started, t = time.monotonic(), time.time()
        time.sleep(ms / 1000)
        log_call(t)
        return {"i": i, "latency_ms": (time.monotonic() - started) * 1000}

    @app.task(name=TASK_DONE)  # type: ignore[untyped-decorator]
    def done(results: list[Any], job: str, counter: str, times: str, sleep_ms: float = 0.0) -> int:
        if sleep_ms:
            t = time.time()
            time.sleep(sleep_ms / 1000)
            log_call(t)
        record_done(url, counter, times, job)
        return len(results)


_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6399/0")
app = make_app(
    _URL,
    int(os.environ.get("BENCH_RESULT_EXPIRES_S", "86400")),
    int(os.environ.get("BENCH_CONCURRENCY", "8")),
)
_register(app, _URL)
