"""The chord callback: judge the outcomes, write the brief, finalise the job exactly once."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task
from pydantic import BaseModel, ConfigDict, ValidationError

from fleetline.shared.batch import Batch
from fleetline.shared.outage import through_outage
from fleetline.shared.schemas import (
    JobStatus,
    OutcomeStatus,
    SubtaskOutcome,
    SubtaskPayload,
    SubtaskSpec,
)
from fleetline.workers.pipeline import Attempt, SubtaskRun
from fleetline.workers.registry import SPECIALISTS
from fleetline.workers.runtime import WorkerRuntime, get_runtime
from fleetline.workers.task import drive
from fleetline.workers.verdict import assemble, findings_text, judge

log = logging.getLogger(__name__)


class SynthesisContext(BaseModel):
    """What the producer tells the callback about the job."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    tenant: str
    deadline_at: float
    expected: int
    synthesis: SubtaskSpec
    budget_usd: float | None = None
    budget_tokens: int | None = None


def parse_outcomes(results: list[Any]) -> list[SubtaskOutcome]:
    """The chord's results as outcomes; anything that is not one is left out."""
    outcomes = []
    for item in results:
        try:
            outcomes.append(SubtaskOutcome.model_validate(item))
        except ValidationError:
            log.warning("chord result is not a subtask outcome: %.200r", item)
    return outcomes


def _brief_run(
    task: Task, context: SynthesisContext, outcomes: list[SubtaskOutcome], runtime: WorkerRuntime
) -> SubtaskRun:
    """The synthesis model call, run through the guards like any subtask."""
    spec = context.synthesis.model_copy(update={"text": findings_text(outcomes)})
    return SubtaskRun(
        payload=SubtaskPayload(
            job_id=context.job_id,
            tenant=context.tenant,
            deadline_at=context.deadline_at,
            subtask=spec,
            budget_usd=context.budget_usd,
            budget_tokens=context.budget_tokens,
        ),
        specialist=SPECIALISTS[spec.worker_type],
        runtime=runtime,
        attempt=Attempt(number=task.request.retries + 1, started_at=time.time()),
        actor=task.request.hostname or "",
        task_name=task.name,
        task_id=task.request.id or "",
    )


def run_synthesis(task: Task, results: list[Any], raw_context: dict[str, Any]) -> dict[str, Any]:
    """Body of the chord callback task: the brief is a subtask like any other."""
    runtime = get_runtime()
    context = SynthesisContext.model_validate(raw_context)
    outcomes = parse_outcomes(results)
    status, completeness = judge(outcomes, context.expected)
    result: dict[str, Any] = assemble(outcomes, [])
    actor = task.request.hostname or ""
    grace = runtime.settings.redis.outage_grace_s
    store = runtime.store

    def finalize(batch: Batch) -> int:
        return store.queue_finalize(
            batch, context.job_id, status, completeness, result, actor, reason="synthesis"
        )

    if status in (JobStatus.SUCCEEDED, JobStatus.DEGRADED) and context.deadline_at > time.time():
        run = _brief_run(task, context, outcomes, runtime)
        brief = drive(task, run)
        if brief.status is OutcomeStatus.OK and brief.output:
            result.update(brief.output)
        else:
            # The agents' findings are still worth having without the brief.
            status = JobStatus.DEGRADED
            result["brief"] = None
        # The brief's bookkeeping and the job's end share one round trip.
        _, reply = through_outage(lambda: run.finish(brief, also=finalize), grace, "finalising")
    else:
        batch = Batch(runtime.redis)
        index = finalize(batch)
        reply = through_outage(batch.execute, grace, "finalising")[index]
    finalised = store.finalized(reply)
    return {"job_id": context.job_id, "finalised": finalised}
