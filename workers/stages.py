"""A pipeline's stage task: its input checked, its step run through the guards, its output
checkpointed, then the next stage sent.

It runs on the queue of the stage's agent or tool, with that worker type's time limits
(the message is sent there). It reads the job and the checkpoint before the stage (one
round trip), plans the job again from its stored spec for the stage's input model (a
decomposer is pure), and runs the step like any other: the same guards, the same ledger,
retries as Celery retries of this task. The outcome and the stage's close (its checkpoint,
its entry in the stage table) share one round trip; the last stage, or one that failed
for good, then ends the run, once.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Task
from redis.exceptions import RedisError

from fleetline.shared.fleet import Stage, StageInputError, Tool
from fleetline.shared.outage import through_outage
from fleetline.shared.pattern_messages import StageMessage, send_stage, subtask_spec
from fleetline.shared.pipeline_state import StageRead
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import JobSpec, JobStatus, OutcomeStatus, SubtaskOutcome
from fleetline.workers.run import SubtaskRun
from fleetline.workers.runtime import WorkerRuntime, get_runtime
from fleetline.workers.task import drive_closing, retry_after_outage, start_run

log = logging.getLogger(__name__)


def run_stage(task: Task, raw: dict[str, Any]) -> dict[str, Any]:
    """Body of the pipeline stage task."""
    message = StageMessage.model_validate(raw)
    try:
        return _stage(task, message, get_runtime())
    except RedisError as exc:
        raise retry_after_outage(task, f"a stage of {message.job_id}", exc) from exc


def _stage(task: Task, message: StageMessage, runtime: WorkerRuntime) -> dict[str, Any]:
    read = runtime.pipelines.read(message.job_id, message.input_from)
    if not read.exists or read.run != message.run or read.status != JobStatus.RUNNING.value:
        # The job ended (deadline, cancel) or a resume moved it to another run meanwhile.
        log.info(
            "stage %d of job %s run %d not run: the run is over",
            message.index,
            message.job_id,
            message.run,
        )
        return {"job_id": message.job_id, "ran": False}
    spec = JobSpec.model_validate_json(read.spec)
    plan = runtime.settings.fleet.plan(message.kind, spec.input)
    stage = plan.stages[message.index]
    run, problem = _stage_run(task, message, read, stage, spec, runtime)
    outcome = (
        run.outcome(OutcomeStatus.FAILED, "invalid_input", str(problem))
        if problem is not None
        else drive_closing(task, run)
    )
    last = message.index == len(plan.stages) - 1
    following = None if last else read.table[message.index + 1]
    actor = task.request.hostname or ""

    def close(trip: RoundTrip) -> int:
        return runtime.pipelines.queue_close(
            trip,
            message.job_id,
            message.run,
            message.index,
            outcome,
            following.step_id if following is not None else None,
            actor,
        )

    grace = runtime.settings.redis.outage_grace_s
    recorded, reply = through_outage(lambda: run.finish(outcome, also=close), grace, "closing")
    closed = runtime.pipelines.closed(reply)
    if closed.stale:
        return {"job_id": message.job_id, "ran": True}
    ok = recorded.status is OutcomeStatus.OK and recorded.output is not None
    if ok and following is not None:
        if (closed.now and closed.running) or closed.resend:
            next_message = message.model_copy(
                update={
                    "index": message.index + 1,
                    "input_from": recorded.subtask_id,
                    "model": None,
                }
            )
            step = plan.stages[message.index + 1].step
            send_stage(task.app, runtime.settings, next_message, step, following.step_id)
        return {"job_id": message.job_id, "ran": True}
    # Closed now or by a delivery that died before ending the run: end it (once per run).
    _end_run(message, read, stage, recorded, runtime, actor)
    return {"job_id": message.job_id, "ran": True}


def _stage_run(
    task: Task,
    message: StageMessage,
    read: StageRead,
    stage: Stage,
    spec: JobSpec,
    runtime: WorkerRuntime,
) -> tuple[SubtaskRun, StageInputError | None]:
    """The stage's run on its input, and why that input is refused (None: it is not)."""
    first = message.index == 0
    entry = read.table[message.index]
    problem: StageInputError | None = None
    value: dict[str, Any] = {}
    if not first and read.checkpoint is None:
        problem = StageInputError(stage.name, [("input", f"no checkpoint {message.input_from}")])
    else:
        try:
            value = stage.check_input(spec.input if first else json.loads(read.checkpoint or "{}"))
        except StageInputError as exc:
            problem = exc
    tool = isinstance(stage.step.worker, Tool)
    subtask = subtask_spec(
        stage.step,
        runtime.settings,
        step_id=entry.step_id,
        text="" if tool or problem else stage.text(value, first),
        args=stage.args(value) if tool and not problem else None,
    )
    return start_run(
        task, message.payload(subtask), stage.step.worker, message.model or ""
    ), problem


def _end_run(
    message: StageMessage,
    read: StageRead,
    stage: Stage,
    recorded: SubtaskOutcome,
    runtime: WorkerRuntime,
    actor: str,
) -> bool:
    """End the run at this stage: succeeded with its output as the answer, else failed (or
    killed) at it; finalising checks the run, so it happens once per run."""
    ok = recorded.status is OutcomeStatus.OK and recorded.output is not None
    done = sum(1 for e in read.table[: message.index] if e.ok) + (1 if ok else 0)
    completeness = round(done / len(read.table), 4)
    result: dict[str, Any]
    if ok:
        status, result = JobStatus.SUCCEEDED, {"answer": recorded.output}
    else:
        killed = recorded.status is OutcomeStatus.KILLED
        status = JobStatus.KILLED if killed else JobStatus.FAILED
        error = recorded.error.model_dump() if recorded.error is not None else None
        result = {"answer": None, "failed_stage": stage.name, "error": error}
    store = runtime.store

    def finalize() -> bool:
        trip = RoundTrip(runtime.redis)
        index = store.queue_finalize(
            trip, message.job_id, status, completeness, result, actor, "pipeline", run=message.run
        )
        return store.finalized(trip.execute()[index])

    grace = runtime.settings.redis.outage_grace_s
    finalised = through_outage(finalize, grace, "finalising")
    if finalised and not ok:
        log.warning("job %s run %d failed at stage %s", message.job_id, message.run, stage.name)
    return finalised
