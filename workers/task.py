"""The Celery side of a subtask: parse, run the pipeline, retry or record, return data.

A header task of a chord must never raise (the body would never run), so every path
ends in a recorded `SubtaskOutcome`; only Celery's own Retry leaves this function.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError
from redis.exceptions import RedisError

from shared.errors import ModelTimeout, RetryableModelError
from shared.names import SUBTASK_TASK_NAMES
from shared.schemas import OutcomeStatus, SubtaskOutcome, SubtaskPayload
from shared.settings import FleetlineSettings
from workers.pipeline import Attempt, execute, failure_outcome, outcome_for
from workers.retry import retry_delay_s
from workers.runtime import WorkerRuntime, get_runtime
from workers.specialist import Specialist

log = logging.getLogger(__name__)

# Redis blips while recording are retried this often, a second apart, before giving up.
_STORE_RETRIES = 30


def run_subtask(task: Task, raw: dict[str, Any], specialist: Specialist) -> dict[str, Any]:
    """Body of every specialist task."""
    runtime = get_runtime()
    try:
        payload = SubtaskPayload.model_validate(raw)
    except ValidationError as exc:
        # Nothing to record against: the message itself is broken.
        log.error("undecodable subtask payload: %s", exc)
        return {"status": OutcomeStatus.FAILED.value, "error": str(exc)[:500]}
    attempt = Attempt(number=task.request.retries + 1, started_at=time.time())
    outcome = _run(task, payload, specialist, runtime, attempt)
    return _record(task, runtime, payload, outcome).model_dump(mode="json")


def _run(
    task: Task,
    payload: SubtaskPayload,
    specialist: Specialist,
    runtime: WorkerRuntime,
    attempt: Attempt,
) -> SubtaskOutcome:
    policy = runtime.settings.worker(payload.subtask.worker_type)
    try:
        return execute(payload, specialist, runtime, attempt)
    except RetryableModelError as exc:
        delay = retry_delay_s(exc, attempt.number, policy)
        if attempt.number <= policy.max_retries and time.time() + delay < payload.deadline_at:
            log.info("retrying %s in %.2fs: %s", payload.subtask.id, delay, exc)
            raise task.retry(countdown=delay, max_retries=policy.max_retries) from exc
        return failure_outcome(payload, attempt, exc)
    except SoftTimeLimitExceeded:
        return failure_outcome(payload, attempt, ModelTimeout("worker time limit reached"))
    except Exception as exc:
        log.exception("subtask %s failed unexpectedly", payload.subtask.id)
        return outcome_for(payload, OutcomeStatus.FAILED, attempt, "internal", repr(exc)[:500])


def _record(
    task: Task, runtime: WorkerRuntime, payload: SubtaskPayload, outcome: SubtaskOutcome
) -> SubtaskOutcome:
    """Record once; a duplicate delivery returns what the first one recorded."""
    try:
        if runtime.store.record_outcome(payload.job_id, outcome, actor=task.request.hostname or ""):
            return outcome
        return runtime.store.outcomes(payload.job_id).get(outcome.subtask_id, outcome)
    except RedisError as exc:
        # The outcome is not recorded yet: run again later rather than lose it.
        raise task.retry(countdown=1.0, max_retries=_STORE_RETRIES) from exc


def register_specialist(app: Celery, specialist: Specialist, settings: FleetlineSettings) -> Task:
    """Register the Celery task of one specialist, with its worker type's limits."""
    policy = settings.worker(specialist.worker_type)

    def body(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
        return run_subtask(self, payload, specialist)

    body.__name__ = specialist.worker_type.value
    task: Task = app.task(
        name=SUBTASK_TASK_NAMES[specialist.worker_type],
        bind=True,
        soft_time_limit=policy.soft_time_limit_s,
        time_limit=policy.time_limit_s,
        max_retries=policy.max_retries,
        # Used when a lost pool child's task is retried: at once, not Celery's 180 s.
        default_retry_delay=policy.retry_backoff_s,
    )(body)
    return task
