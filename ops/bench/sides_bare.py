"""The baselines as sides: bare Celery (a chord) and Dramatiq (a group with a callback)."""

from __future__ import annotations

import gc
import sys
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery, chord

from ops.bench.harness import child_env, settings_for, start_process
from ops.bench.jobs import Shape, run_burst, shape_of_plain
from ops.bench.sides import Side, celery_argv, wait_pings


def check_bare_queues(shape: Shape) -> Shape:
    """`shape` if bare Celery's workers consume every queue it uses, else ValueError.

    The bare app's queues are a plain copy of the example fleet's agent names (it imports
    nothing of Fleetline): a fleet whose plan uses another queue would hang the bare side.
    """
    from ops.bench.bare_celery import QUEUES

    missing = sorted({*shape.queues, shape.then} - set(QUEUES))
    if missing:
        raise ValueError(f"bare Celery has no worker for queue(s) {', '.join(missing)}")
    return shape


@dataclass
class BareCelerySide(Side):
    """Bare Celery: a chord of the same headers on the same queues, and a counting callback.

    Its producer submits the way Fleetline's does: a send-only result backend (`quiet`: no
    SUBSCRIBE per task), the same priority, every message through one acquired producer.
    """

    pool: str = "threads"
    concurrency: int = 8
    single: bool = False
    sleep_ms: float = 0.0
    quiet: bool = True
    result_expires_s: int = 86_400
    app: Celery | None = None
    backend: Any = None

    def launch(self) -> None:
        self.db = self.bench.new_db()
        url = self.bench.url(self.db)
        env = child_env(
            {
                "BENCH_REDIS_URL": url,
                "BENCH_CONCURRENCY": str(self.concurrency),
                "BENCH_RESULT_EXPIRES_S": str(self.result_expires_s),
                "FLEETLINE_LOG_LEVEL": "WARNING",
                **self.env,
            }
        )
        settings = settings_for(env)
        logs = self.bench.log_dir(f"{self.name}-{self.db}")
        for label, queues in self.worker_groups():
            argv = celery_argv(
                settings, "ops.bench.bare_celery", label, queues, self.pool, self.concurrency
            )
            self.procs.append(start_process(argv, env, logs / f"{label}.log"))
        from ops.bench.bare_celery import make_app

        self.app = make_app(url, self.result_expires_s, self.concurrency, quiet=self.quiet)
        self.backend = self.app.backend

    def worker_groups(self) -> list[tuple[str, list[str]]]:
        """Each worker process to start: its label and its queues (one per queue, or one
        for all of them when `single`)."""
        from ops.bench.bare_celery import QUEUES

        if self.single:
            return [(f"{self.name}-all", list(QUEUES))]
        return [(f"{self.name}-{q}", [q]) for q in QUEUES]

    def ready(self) -> None:
        assert self.app is not None
        wait_pings(self.app, len(self.procs))

    def stop(self) -> None:
        super().stop()
        if self.app is not None:
            # Celery's Redis backend keeps every never-awaited result (and its channel
            # subscription) alive, and a result collected after Redis is gone retries its
            # UNSUBSCRIBE for 20 s. Let them go now, and make any later one a no-op.
            # (The backend is per thread: use the one the producer thread made.)
            backend = self.backend
            for mapping in getattr(backend, "_pending_results", ()):
                mapping.clear()
            gc.collect()
            backend.remove_pending_result = lambda result: result
            self.app.close()
            self.app = None

    def submit(self, shape: Shape) -> str:
        from ops.bench.bare_celery import PRIORITY, TASK_DONE, TASK_NOOP, TASK_SLEEP

        assert self.app is not None
        job = uuid.uuid4().hex
        if self.sleep_ms:
            header = [
                self.app.signature(TASK_SLEEP, args=(i, self.sleep_ms), queue=q, priority=PRIORITY)
                for i, q in enumerate(shape.queues)
            ]
        else:
            header = [
                self.app.signature(TASK_NOOP, args=(i,), queue=q, priority=PRIORITY)
                for i, q in enumerate(shape.queues)
            ]
        body = self.app.signature(
            TASK_DONE,
            kwargs={
                "job": job,
                "counter": self.counter_key,
                "times": self.times_key,
                "sleep_ms": self.sleep_ms,
            },
            # Where Fleetline's fan-in goes: the queue of the plan's then-step.
            queue=shape.then,
            priority=PRIORITY,
        )
        # A chord publishes its header through one acquired producer, as Fleetline's
        # submit does its steps.
        chord(header, body).apply_async()
        return job


@dataclass
class DramatiqSide(Side):
    """Dramatiq: a group of the same size with a completion callback, Results middleware on."""

    processes: int = 4
    threads: int = 8
    broker: Any = None

    def launch(self) -> None:
        from ops.bench.bare_dramatiq import make_broker

        self.db = self.bench.new_db()
        url = self.bench.url(self.db)
        env = child_env({"BENCH_DRAMATIQ_URL": url, **self.env})
        argv = [
            sys.executable,
            "-m",
            "dramatiq",
            "ops.bench.bare_dramatiq",
            "--processes",
            str(self.processes),
            "--threads",
            str(self.threads),
        ]
        logs = self.bench.log_dir(f"{self.name}-{self.db}")
        self.procs.append(start_process(argv, env, logs / "dramatiq.log"))
        self.broker = make_broker(url)

    def ready(self) -> None:
        # Dramatiq has no ping: the first job done is the sign of life.
        run_burst(self, shape_of_plain(4), 1, stall_s=90)

    def submit(self, shape: Shape) -> str:
        from dramatiq import Message, group

        job = uuid.uuid4().hex
        children: list[Message[Any]] = [
            Message(queue_name="default", actor_name="bench_noop", args=(i,), kwargs={}, options={})
            for i in range(shape.subtasks)
        ]
        callback: Message[Any] = Message(
            queue_name="default",
            actor_name="bench_done",
            args=(job, self.counter_key, self.times_key),
            kwargs={},
            options={},
        )
        g = group(children, broker=self.broker)  # type: ignore[no-untyped-call]
        g.add_completion_callback(callback)  # type: ignore[no-untyped-call]
        g.run()  # type: ignore[no-untyped-call]
        return job
