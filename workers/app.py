"""The worker-side Celery app: `celery -A workers.app worker -Q <worker type>`.

Reading settings here is the start-up check: invalid settings stop the worker at once.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Task
from celery.signals import worker_init, worker_process_init
from celery.worker.control import control_command

from fleetline.beat.batches import run_batch
from fleetline.beat.killswitch_task import (
    RESUME_COMMAND,
    CeleryQueueControl,
    enforce,
    resume_home_queue,
)
from fleetline.beat.watchdog import finalise_overdue
from fleetline.producer.submit import Producer
from fleetline.shared.celery_app import make_celery
from fleetline.shared.logs import quiet_periodic_tasks
from fleetline.shared.names import (
    TASK_BATCH_RUN,
    TASK_KILLSWITCH_CHECK,
    TASK_REAP_DEADLINES,
    TASK_SYNTHESIS,
    WorkerType,
)
from fleetline.shared.settings import get_settings
from fleetline.shared.tracing import init_sentry
from fleetline.workers.registry import SPECIALISTS
from fleetline.workers.runtime import get_runtime
from fleetline.workers.synthesis import run_synthesis
from fleetline.workers.task import register_specialist

settings = get_settings()
quiet_periodic_tasks([TASK_REAP_DEADLINES, TASK_KILLSWITCH_CHECK])
app = make_celery(settings, name="fleetline-worker")

for worker_type, specialist in SPECIALISTS.items():
    if worker_type is not WorkerType.SYNTHESIS:
        register_specialist(app, specialist, settings)

_synthesis_policy = settings.worker(WorkerType.SYNTHESIS)


@app.task(
    name=TASK_SYNTHESIS,
    bind=True,
    soft_time_limit=_synthesis_policy.soft_time_limit_s,
    time_limit=_synthesis_policy.time_limit_s,
    max_retries=_synthesis_policy.max_retries,
    default_retry_delay=_synthesis_policy.retry_backoff_s,
)
def synthesis(self: Task, results: list[Any], context: dict[str, Any]) -> dict[str, Any]:
    return run_synthesis(self, results, context)


@app.task(name=TASK_REAP_DEADLINES, ignore_result=True, expires=5)
def reap_deadlines() -> int:
    runtime = get_runtime()
    return len(
        finalise_overdue(runtime.store, time.time(), runtime.settings.limits.deadline_grace_s)
    )


@app.task(name=TASK_KILLSWITCH_CHECK, ignore_result=True)
def killswitch_check() -> dict[str, Any]:
    runtime = get_runtime()
    return enforce(
        runtime.redis,
        runtime.settings.spend,
        CeleryQueueControl(app),
        trip_at=runtime.settings.killswitch.trip_at,
    ).as_dict()


# Acked on receipt: a run waits for its jobs longer than the visibility timeout, and a
# redelivered run would only wait again (its jobs are idempotent by slot).
@app.task(name=TASK_BATCH_RUN, ignore_result=True, acks_late=False)
def batch_run(name: str) -> dict[str, Any]:
    runtime = get_runtime()
    producer = Producer(runtime.settings, runtime.redis, app)
    return run_batch(name, runtime.settings, producer, runtime.store).model_dump(mode="json")


# The queues this worker was started with (-Q): the only ones it ever resumes.
_home_queues: set[str] = set()


@worker_init.connect
def _on_worker_init(sender: Any, **_: Any) -> None:
    _home_queues.update(sender.app.amqp.queues.consume_from)
    init_sentry(settings)


@worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    init_sentry(settings)


@control_command(name=RESUME_COMMAND, args=[("queue", str)], signature="<queue>")
def _resume_queue(state: Any, queue: str, **_: Any) -> dict[str, str]:
    return resume_home_queue(state.consumer, queue, _home_queues)
