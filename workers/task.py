"""The Celery side of a subtask: parse, run the pipeline, retry or record, return data.

A fan-out's fan-in runs once every step's outcome is recorded, so every path ends in a
recorded `SubtaskOutcome`; only Celery's own Retry leaves this function.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError
from pydantic import ValidationError
from redis.exceptions import RedisError

from fleetline.shared import fan_in_join, otel
from fleetline.shared.errors import ModelTimeout, PermanentStepError, RetryableStepError
from fleetline.shared.fleet import Agent, Tool
from fleetline.shared.outage import through_outage
from fleetline.shared.rate_limits import WAIT_IN_PLACE_S
from fleetline.shared.schemas import (
    OutcomeStatus,
    PayloadVersionError,
    SubtaskOutcome,
    SubtaskPayload,
    parse_payload,
)
from fleetline.shared.settings import FleetlineSettings
from fleetline.workers.guards import Defer, WaitToRun
from fleetline.workers.retry import retry_delay_s
from fleetline.workers.run import Attempt, SubtaskRun
from fleetline.workers.runtime import get_runtime
from fleetline.workers.step_trace import StepTrace

log = logging.getLogger(__name__)

# Redis blips while recording are retried this often, a second apart, before giving up.
STORE_RETRIES = 30


def start_run(
    task: Task, payload: SubtaskPayload, worker: Agent | Tool, model: str = ""
) -> SubtaskRun:
    """A run of this delivery, labelled with the worker and task that make it (`model`:
    the one it must run on, else its tier's); its span opened under the job's trace."""
    # Going back to the queue for a rate window is a Celery retry, but not an attempt.
    attempt = task.request.retries + 1 - payload.deferrals
    run = SubtaskRun(
        payload=payload,
        worker=worker,
        runtime=get_runtime(),
        attempt=Attempt(number=attempt, started_at=time.time()),
        actor=task.request.hostname or "",
        task_name=task.name,
        task_id=task.request.id or "",
        model=model,
    )
    # The job's trace came in the message's headers (kept by retries and redeliveries).
    run.trace = StepTrace.start(run, otel.parent_from(task.request.headers))
    return run


def run_subtask(task: Task, raw: dict[str, Any], worker: Agent | Tool) -> dict[str, Any]:
    """Body of every agent's and tool's task."""
    try:
        payload = parse_payload(raw)
    except PayloadVersionError as exc:
        # Sent by a newer producer than this worker (upgrade the workers first): kept as
        # it came, to replay once a worker that knows the version runs, not misread.
        log.error("unsupported payload version for %s: %s", worker.name, exc)
        return refuse(task, raw, worker, "unsupported_version", str(exc))
    except ValidationError as exc:
        # Nothing to record against: the message itself is broken.
        log.error("invalid subtask payload for %s: %s", worker.name, exc)
        return refuse(task, raw, worker, "invalid_payload", f"not a SubtaskPayload: {exc}")
    run = start_run(task, payload, worker)
    try:
        recorded = record(run, drive(task, run))
        if run.fan_in_due is not None:
            # Before the ack: a worker that dies first is redelivered and sends it then.
            fan_in_join.send(task.app, run.fan_in_due)
        if task.request.chord:
            # A chord of an earlier producer: its callback reads the outcomes from the results.
            return recorded.model_dump(mode="json")
        # Nothing stores it: it is only what the worker's log line shows.
        return {"subtask_id": recorded.subtask_id, "status": recorded.status.value}
    except (RedisError, OperationalError) as exc:
        raise retry_after_outage(task, payload.subtask.id, exc) from exc
    finally:
        run.trace.close(run)


def refuse(
    task: Task, raw: dict[str, Any], worker: Agent | Tool, reason: str, detail: str
) -> dict[str, Any]:
    """Dead-letter a payload that cannot be run, with its arguments as they came (riding
    out a short Redis outage), and still return data: a subtask never raises."""
    delivery = task.request.delivery_info or {}
    try:
        runtime = get_runtime()
        through_outage(
            lambda: runtime.dead_letters.add(
                reason=reason,
                detail=detail,
                queue=str(delivery.get("routing_key") or worker.name),
                task=task.name,
                task_id=task.request.id or "",
                message={"args": [raw], "kwargs": {}},
            ),
            runtime.settings.redis.outage_grace_s,
            "dead-lettering",
        )
    except Exception:
        log.exception("could not dead-letter a %s payload (%s)", worker.name, reason)
    return {"status": OutcomeStatus.FAILED.value, "error": detail[:500]}


def record(run: SubtaskRun, outcome: SubtaskOutcome) -> SubtaskOutcome:
    """Close the run and record its outcome, riding out a short Redis outage."""
    grace = run.runtime.settings.redis.outage_grace_s
    return through_outage(lambda: run.finish(outcome), grace, "recording")[0]


def drive(task: Task, run: SubtaskRun, *, may_requeue: bool = True) -> SubtaskOutcome:
    """Guards, then the call. A step told to wait (a full rate window, its tenant over
    its fair share) waits in place when that is short, else back in its queue; when the
    wait ends past the deadline the step ends `timed_out` without a call.

    may_requeue: False for a step whose task is not its own message (the fan-in's then-step):
    it waits in place, within its deadline.
    """
    while True:
        try:
            return attempt(task, run)
        except WaitToRun as told:
            run.abandon()  # nothing stays held while it waits
            wait = told.wait
            if time.time() + wait.seconds >= run.payload.deadline_at:
                message = f"{wait.reason}; waiting {wait.seconds:.1f}s would pass the deadline"
                return run.outcome(OutcomeStatus.TIMED_OUT, wait.category, message)
            if may_requeue and (wait.requeue or wait.seconds > WAIT_IN_PLACE_S):
                raise requeue(task, run, wait) from told
            run.wait_for_window(wait.seconds, counted=wait.category == "rate_limit")


def retry_after_outage(task: Task, what: str, exc: RedisError | OperationalError) -> Exception:
    """The Retry that runs the task again once Redis is back: nothing of it is recorded
    yet, and running it again beats losing it."""
    log.warning("Redis unavailable for %s, retrying: %s", what, exc)
    retry: Exception = task.retry(countdown=1.0, max_retries=STORE_RETRIES)
    return retry


def drive_closing(task: Task, run: SubtaskRun) -> SubtaskOutcome:
    """`drive` for a step whose task is not its own message (a fan-out's then-step, a
    pipeline's stage, a debate's turn or judge): it waits in place, and an attempt that
    ends in a retry closes its span on the way out (the task records the rest itself)."""
    try:
        return drive(task, run, may_requeue=False)
    except BaseException:
        run.trace.close(run)
        raise


def requeue(task: Task, run: SubtaskRun, wait: Defer) -> Exception:
    """The Retry that sends the step back to its queue for the wait; it is not one of
    the step's retries (its attempt number and max_retries stay as they were)."""
    seconds = wait.seconds
    waited = run.notes.get("rate_waited_s", 0.0)
    payload = run.payload.model_copy(
        update={
            "deferrals": run.payload.deferrals + 1,
            "rate_waited_s": waited + (seconds if wait.category == "rate_limit" else 0.0),
        }
    )
    log.info("%s goes back to its queue for %.1fs", run.payload.subtask.id, seconds)
    retry: Exception = task.retry(
        args=[payload.model_dump(mode="json")],
        countdown=seconds,
        max_retries=task.request.retries + 1,
    )
    return retry


def attempt(task: Task, run: SubtaskRun) -> SubtaskOutcome:
    """One pass of the guards and the call; a retryable failure retries while the
    deadline allows."""
    policy = run.runtime.settings.worker(run.payload.subtask.worker_type)
    grace = run.runtime.settings.redis.outage_grace_s
    try:
        return through_outage(run.before, grace, "guards") or run.call()
    except RetryableStepError as exc:
        run.call_error = exc
        delay = retry_delay_s(exc, run.attempt.number, policy)
        if (
            run.attempt.number <= policy.max_retries
            and time.time() + delay < run.payload.deadline_at
        ):
            log.info("retrying %s in %.2fs: %s", run.payload.subtask.id, delay, exc)
            run.abandon()
            retries = policy.max_retries + run.payload.deferrals
            raise task.retry(countdown=delay, max_retries=retries) from exc
        return run.failure(exc)
    except PermanentStepError as exc:
        return run.failure(exc)
    except SoftTimeLimitExceeded:
        return run.failure(ModelTimeout("worker time limit reached"))
    except (RedisError, WaitToRun):
        raise
    except Exception as exc:
        log.exception("subtask %s failed unexpectedly", run.payload.subtask.id)
        return run.outcome(OutcomeStatus.FAILED, "internal", repr(exc)[:500])


def register_worker_type(app: Celery, worker: Agent | Tool, settings: FleetlineSettings) -> Task:
    """Register the Celery task of one agent or tool (named after it), with its limits."""
    policy = settings.worker(worker.name)

    def body(self: Task, payload: dict[str, Any]) -> dict[str, Any]:
        return run_subtask(self, payload, worker)

    body.__name__ = worker.name
    task: Task = app.task(
        name=worker.name,
        bind=True,
        soft_time_limit=policy.soft_time_limit_s,
        time_limit=policy.time_limit_s,
        max_retries=policy.max_retries,
        # The outcome is in the state store; a fan-out's join counts it there.
        ignore_result=True,
        # Used when a lost pool child's task is retried: at once, not Celery's 180 s.
        default_retry_delay=policy.retry_backoff_s,
    )(body)
    return task
