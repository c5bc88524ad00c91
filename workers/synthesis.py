"""The chord callback: judge the outcomes, write the brief, finalise the job exactly once."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task
from pydantic import BaseModel, ConfigDict, ValidationError

from shared.errors import RetryableModelError
from shared.schemas import JobStatus, OutcomeStatus, SubtaskOutcome, SubtaskPayload, SubtaskSpec
from workers.pipeline import Attempt, execute, failure_outcome
from workers.registry import SPECIALISTS
from workers.retry import retry_delay_s
from workers.runtime import WorkerRuntime, get_runtime
from workers.verdict import assemble, findings_text, judge

log = logging.getLogger(__name__)


class SynthesisContext(BaseModel):
    """What the producer tells the callback about the job."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    tenant: str
    deadline_at: float
    expected: int
    synthesis: SubtaskSpec


def parse_outcomes(results: list[Any]) -> list[SubtaskOutcome]:
    """The chord's results as outcomes; anything that is not one is left out."""
    outcomes = []
    for item in results:
        try:
            outcomes.append(SubtaskOutcome.model_validate(item))
        except ValidationError:
            log.warning("chord result is not a subtask outcome: %.200r", item)
    return outcomes


def synthesise(
    context: SynthesisContext,
    outcomes: list[SubtaskOutcome],
    runtime: WorkerRuntime,
    attempt: Attempt,
    actor: str,
) -> bool:
    """Finalise the job from its outcomes; False when it was already final (deadline)."""
    status, completeness = judge(outcomes, context.expected)
    result: dict[str, Any] = assemble(outcomes, [])
    if status is not JobStatus.FAILED and context.deadline_at > time.time():
        brief = _write_brief(context, outcomes, runtime, attempt)
        runtime.store.record_outcome(context.job_id, brief, actor)
        if brief.status is OutcomeStatus.OK and brief.output:
            result.update(brief.output)
        else:
            status = JobStatus.DEGRADED
            result["brief"] = None
    return runtime.store.finalize(
        context.job_id, status, completeness, result, actor, reason="synthesis"
    )


def _write_brief(
    context: SynthesisContext,
    outcomes: list[SubtaskOutcome],
    runtime: WorkerRuntime,
    attempt: Attempt,
) -> SubtaskOutcome:
    spec = context.synthesis.model_copy(update={"text": findings_text(outcomes)})
    payload = SubtaskPayload(
        job_id=context.job_id, tenant=context.tenant, deadline_at=context.deadline_at, subtask=spec
    )
    return execute(payload, SPECIALISTS[spec.worker_type], runtime, attempt)


def run_synthesis(task: Task, results: list[Any], raw_context: dict[str, Any]) -> dict[str, Any]:
    """Body of the chord callback task."""
    runtime = get_runtime()
    context = SynthesisContext.model_validate(raw_context)
    attempt = Attempt(number=task.request.retries + 1, started_at=time.time())
    outcomes = parse_outcomes(results)
    policy = runtime.settings.worker(context.synthesis.worker_type)
    try:
        finalised = synthesise(context, outcomes, runtime, attempt, task.request.hostname or "")
    except RetryableModelError as exc:
        delay = retry_delay_s(exc, attempt.number, policy)
        if attempt.number <= policy.max_retries and time.time() + delay < context.deadline_at:
            raise task.retry(countdown=delay) from exc
        # Out of retries: the job still ends, with what the agents found and no brief.
        brief = failure_outcome(
            SubtaskPayload(
                job_id=context.job_id,
                tenant=context.tenant,
                deadline_at=context.deadline_at,
                subtask=context.synthesis,
            ),
            attempt,
            exc,
        )
        runtime.store.record_outcome(context.job_id, brief, task.request.hostname or "")
        _, completeness = judge(outcomes, context.expected)
        finalised = runtime.store.finalize(
            context.job_id,
            JobStatus.DEGRADED,
            completeness,
            {**assemble(outcomes, []), "brief": None},
            task.request.hostname or "",
            reason="synthesis model failed",
        )
    return {"job_id": context.job_id, "finalised": finalised}
