"""The worker-side Celery app: `celery -A workers.app worker -Q <worker type>`.

Reading settings here is the start-up check: invalid settings stop the worker at once.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Task

from beat.watchdog import finalise_overdue
from shared.celery_app import make_celery
from shared.logs import quiet_periodic_tasks
from shared.names import TASK_REAP_DEADLINES, TASK_SYNTHESIS, WorkerType
from shared.settings import get_settings
from workers.registry import SPECIALISTS
from workers.runtime import get_runtime
from workers.synthesis import run_synthesis
from workers.task import register_specialist

settings = get_settings()
quiet_periodic_tasks([TASK_REAP_DEADLINES])
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
