"""The fan-out's fan-in: judge the outcomes, run the then-step, finalise once.

It runs on the queue of the plan's then-step, whose worker runs that step on the text the
job's `combine` makes of the usable outcomes, through the same guards as any step. The
step's bookkeeping and the job's end share one round trip.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.exceptions import Retry
from pydantic import BaseModel, ConfigDict, ValidationError

from fleetline.shared import otel, trace_store
from fleetline.shared.fleet import FleetDefinition
from fleetline.shared.outage import through_outage
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import (
    JobStatus,
    OutcomeStatus,
    StepKind,
    SubtaskOutcome,
    SubtaskPayload,
    SubtaskSpec,
)
from fleetline.shared.verdict import assemble, judge, listed_outputs
from fleetline.workers.run import Attempt, SubtaskRun, closing_guards
from fleetline.workers.runtime import WorkerRuntime, get_runtime
from fleetline.workers.step_trace import StepTrace, open_span
from fleetline.workers.task import drive_closing

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)


class FanInContext(BaseModel):
    """What the producer tells the callback about the job."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    kind: str
    tenant: str
    deadline_at: float
    expected: int
    then: SubtaskSpec
    budget_usd: float | None = None
    budget_tokens: int | None = None


def parse_outcomes(results: list[Any]) -> list[SubtaskOutcome]:
    """The chord's results as outcomes; anything that is not one is left out."""
    outcomes = []
    for item in results:
        try:
            outcomes.append(SubtaskOutcome.model_validate(item))
        except ValidationError:
            log.warning("chord result is not a step outcome: %.200r", item)
    return outcomes


def combined_text(fleet: FleetDefinition, kind: str, outcomes: list[SubtaskOutcome]) -> str:
    """The then-step's text: the job's `combine` of the outcomes, or each usable output."""
    job = fleet.jobs.get(kind)
    combine = job.combine if job is not None and job.combine is not None else listed_outputs
    return combine(outcomes)


def _then_run(
    task: Task, context: FanInContext, outcomes: list[SubtaskOutcome], runtime: WorkerRuntime
) -> SubtaskRun:
    """The then-step, run through the guards like any step."""
    fleet = runtime.settings.fleet
    spec = context.then
    if spec.kind is StepKind.AGENT:
        spec = spec.model_copy(update={"text": combined_text(fleet, context.kind, outcomes)})
    return SubtaskRun(
        payload=SubtaskPayload(
            job_id=context.job_id,
            tenant=context.tenant,
            deadline_at=context.deadline_at,
            subtask=spec,
            budget_usd=context.budget_usd,
            budget_tokens=context.budget_tokens,
        ),
        worker=fleet.worker_types[spec.worker_type],
        guards=closing_guards(fleet.worker_types[spec.worker_type]),
        runtime=runtime,
        attempt=Attempt(number=task.request.retries + 1, started_at=time.time()),
        actor=task.request.hostname or "",
        task_name=task.name,
        task_id=task.request.id or "",
    )


def run_fan_in(
    task: Task, results: list[Any] | None, raw_context: dict[str, Any], claim: str = ""
) -> dict[str, Any]:
    """Body of the fan-in task: sent by the worker that completed the join (with a claim),
    or by an earlier producer's chord (with the steps' results)."""
    runtime = get_runtime()
    context = FanInContext.model_validate(raw_context)
    if results is None:
        claimed = through_outage(
            lambda: runtime.fan_in_claims.claim(context.job_id, claim, context.then.id),
            runtime.settings.redis.outage_grace_s,
            "claiming the fan-in",
        )
        if not claimed.runs:
            log.info("fan-in of %s already ran or runs elsewhere", context.job_id)
            return {"job_id": context.job_id, "finalised": False}
        outcomes = claimed.outcomes
    else:
        outcomes = parse_outcomes(results)
    status, completeness = judge(outcomes, context.expected)
    span = None
    if otel.enabled():
        span = open_span(
            f"fan_in {context.kind}",
            otel.parent_from(task.request.headers),
            {
                otel.JOB_ID: context.job_id,
                otel.JOB_KIND: context.kind,
                otel.EXPECTED: context.expected,
                otel.RECEIVED: len(outcomes),
            },
        )
    try:
        return _fan_in(task, context, outcomes, status, completeness, runtime, span)
    except BaseException as exc:
        if span is not None:
            span.set_attribute(otel.STATUS, "retry" if isinstance(exc, Retry) else "error")
        raise
    finally:
        if span is not None:
            span.end()
            trace_store.write_pending(
                runtime.redis,
                context.job_id,
                span.get_span_context().trace_id,
                runtime.settings.limits.finished_ttl_s,
                runtime.settings.trace.max_spans,
            )


def _fan_in(
    task: Task,
    context: FanInContext,
    outcomes: list[SubtaskOutcome],
    status: JobStatus,
    completeness: float,
    runtime: WorkerRuntime,
    span: Span | None,
) -> dict[str, Any]:
    """Run the then-step if the outcomes allow, and finalise the job with it."""
    job = runtime.settings.fleet.jobs.get(context.kind)
    result: dict[str, Any] = assemble(outcomes, [], job.collect if job else None)
    result["answer"] = None
    actor = task.request.hostname or ""
    grace = runtime.settings.redis.outage_grace_s
    store = runtime.store

    def finalize(trip: RoundTrip) -> int:
        return store.queue_finalize(
            trip, context.job_id, status, completeness, result, actor, reason="fan_in"
        )

    if status in (JobStatus.SUCCEEDED, JobStatus.DEGRADED) and context.deadline_at > time.time():
        run = _then_run(task, context, outcomes, runtime)
        if span is not None:
            run.trace = StepTrace.start(run, otel.context_of(span))
        answer = drive_closing(task, run)
        if answer.status is OutcomeStatus.OK and answer.output is not None:
            result["answer"] = answer.output
        else:
            # What the steps found is still worth having without the answer.
            status = JobStatus.DEGRADED
            result["unusable"].append(context.then.id)
        _, reply = through_outage(lambda: run.finish(answer, also=finalize), grace, "finalising")
    else:
        trip = RoundTrip(runtime.redis)
        index = finalize(trip)
        reply = through_outage(trip.execute, grace, "finalising")[index]
    finalised = store.finalized(reply)
    if span is not None:
        span.set_attributes(
            {otel.STATUS: status.value, otel.COMPLETENESS: completeness, otel.FINALISED: finalised}
        )
    return {"job_id": context.job_id, "finalised": finalised}
