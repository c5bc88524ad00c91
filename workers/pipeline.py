"""One subtask, start to finish, as a plain function: the guards run here, in order.

Celery is not imported: the task adapter in `workers.task` decides what a retryable error
means for the message; everything else becomes a `SubtaskOutcome`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from shared.errors import ModelTimeout, PermanentModelError
from shared.models.base import ModelRequest, ModelResponse
from shared.models.prices import call_cost_usd
from shared.schemas import OutcomeError, OutcomeStatus, SubtaskOutcome, SubtaskPayload
from workers.runtime import WorkerRuntime
from workers.specialist import Specialist


@dataclass(frozen=True)
class Attempt:
    """Which delivery of the subtask this is, and when it started."""

    number: int
    started_at: float


def outcome_for(
    payload: SubtaskPayload,
    status: OutcomeStatus,
    attempt: Attempt,
    category: str | None = None,
    message: str = "",
    **fields: object,
) -> SubtaskOutcome:
    """An outcome of this subtask; errors carry a category and a message."""
    return SubtaskOutcome.model_validate(
        {
            "subtask_id": payload.subtask.id,
            "worker_type": payload.subtask.worker_type,
            "status": status,
            "error": OutcomeError(category=category, message=message) if category else None,
            "attempts": attempt.number,
            "critical": payload.subtask.critical,
            "latency_ms": (time.time() - attempt.started_at) * 1000,
            **fields,
        }
    )


def pick_model(runtime: WorkerRuntime, payload: SubtaskPayload) -> str:
    """The model that serves this subtask: the first of its tier's chain."""
    return runtime.settings.tiers[payload.subtask.tier][0]


def call_timeout_s(runtime: WorkerRuntime, payload: SubtaskPayload, now: float) -> float:
    """The smaller of the agent's own ceiling and what is left of the job's deadline."""
    agent = runtime.settings.worker(payload.subtask.worker_type).max_call_s
    return max(0.001, min(agent, payload.deadline_at - now))


def execute(
    payload: SubtaskPayload,
    specialist: Specialist,
    runtime: WorkerRuntime,
    attempt: Attempt,
) -> SubtaskOutcome:
    """Run the subtask through its guards and the model call.

    Raises `RetryableModelError` for the caller to retry; returns an outcome otherwise.
    """
    now = time.time()
    if payload.deadline_at <= now:
        return outcome_for(
            payload, OutcomeStatus.SKIPPED, attempt, "deadline", "started after the deadline"
        )
    model = pick_model(runtime, payload)
    spec = runtime.settings.models[model]
    request = ModelRequest(
        model=model,
        api_model=spec.api_model or model,
        worker_type=payload.subtask.worker_type,
        instruction=specialist.instruction(payload.subtask.instruction),
        document=payload.subtask.text,
        max_output_tokens=payload.subtask.max_output_tokens,
        timeout_s=call_timeout_s(runtime, payload, now),
        call_id=payload.subtask.id,
        attempt=attempt.number,
    )
    try:
        response = runtime.client(model).complete(request)
    except PermanentModelError as exc:
        return outcome_for(
            payload, OutcomeStatus.FAILED, attempt, exc.category, str(exc), model=model
        )
    return _validated(
        payload,
        specialist,
        attempt,
        response,
        call_cost_usd(spec, response.tokens_in, response.tokens_out),
    )


def _validated(
    payload: SubtaskPayload,
    specialist: Specialist,
    attempt: Attempt,
    response: ModelResponse,
    cost_usd: float,
) -> SubtaskOutcome:
    usage: dict[str, Any] = {
        "model": response.model,
        "tokens_in": response.tokens_in,
        "tokens_out": response.tokens_out,
        "cost_usd": cost_usd,
    }
    try:
        output = specialist.output_schema.model_validate_json(response.text)
    except ValidationError as exc:
        return outcome_for(
            payload,
            OutcomeStatus.INVALID_OUTPUT,
            attempt,
            "invalid_output",
            _first_errors(exc),
            **usage,
        )
    return outcome_for(payload, OutcomeStatus.OK, attempt, output=output.model_dump(), **usage)


def _first_errors(exc: ValidationError, limit: int = 5) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'output'}: {e['msg']}"
        for e in exc.errors()[:limit]
    )


def failure_outcome(
    payload: SubtaskPayload, attempt: Attempt, exc: Exception, model: str | None = None
) -> SubtaskOutcome:
    """The outcome of a subtask whose retries ran out (or whose deadline did)."""
    status = OutcomeStatus.TIMED_OUT if isinstance(exc, ModelTimeout) else OutcomeStatus.FAILED
    category = getattr(exc, "category", "internal")
    return outcome_for(
        payload, status, attempt, category, str(exc) or type(exc).__name__, model=model
    )
