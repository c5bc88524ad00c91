"""The messages of a pipeline's stages, a debate's turns and a supervised job's drafts and
actions, and how they are sent.

Unlike a fan-out's chord, a pipeline or a debate sends its steps one round at a time: the
producer sends the first, and the task that closes a stage or a round sends the next. Each
message goes by task name to the queue of the step's agent or tool, with that worker
type's time limits, as a fan-out's callback does; its body says which job, which run or
round and which step, and carries the bounds every step of the job runs under.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from pydantic import BaseModel, ConfigDict, Field

from fleetline.shared.fleet import Step, Tool
from fleetline.shared.names import (
    TASK_DEBATE_JUDGE,
    TASK_DEBATE_TURN,
    TASK_PIPELINE_STAGE,
    TASK_SUPERVISED_ACTION,
    TASK_SUPERVISED_DRAFT,
)
from fleetline.shared.schemas import StepKind, SubtaskPayload, SubtaskSpec
from fleetline.shared.settings import FleetlineSettings


class JobMessage(BaseModel):
    """The job a stage or turn belongs to, and the bounds its steps run under."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    kind: str
    tenant: str
    deadline_at: float
    budget_usd: float | None = None
    budget_tokens: int | None = None
    # kombu's priority (0 first); the same for every message of the job.
    priority: int = Field(default=4, ge=0, le=9)
    # The job's trace context (W3C `traceparent`), sent as every message's headers as a
    # fan-out's are: each stage and turn is a span under the job's submit.
    trace: dict[str, str] = Field(default_factory=dict)

    def payload(self, subtask: SubtaskSpec) -> SubtaskPayload:
        """The step's payload, as its guards read it."""
        return SubtaskPayload(
            job_id=self.job_id,
            tenant=self.tenant,
            deadline_at=self.deadline_at,
            subtask=subtask,
            budget_usd=self.budget_usd,
            budget_tokens=self.budget_tokens,
        )


class StageMessage(JobMessage):
    """One stage of one run of a pipeline."""

    run: int = Field(ge=1)
    index: int = Field(ge=0)
    # The step id whose checkpoint is this stage's input (None: the job's input).
    input_from: str | None = None
    # The model this stage runs on when a resume named one (else its tier's).
    model: str | None = None


class TurnMessage(JobMessage):
    """One agent's turn in a debate round, or (agent None) the debate's judge."""

    round: int = Field(ge=1)
    agent: int | None = Field(default=None, ge=0)


class DraftMessage(JobMessage):
    """One draft of a supervised job: the agent step whose actions are reviewed."""

    index: int = Field(ge=0)


class ActionMessage(JobMessage):
    """One approved action of a supervised job, to run on its tool's queue."""

    action_id: str


def subtask_spec(
    step: Step,
    settings: FleetlineSettings,
    *,
    step_id: str,
    text: str = "",
    args: dict[str, Any] | None = None,
) -> SubtaskSpec:
    """A step as its worker receives it, under `step_id`, reading `text` (an agent) or
    called with `args` (a tool)."""
    policy = settings.worker(step.worker_type)
    if isinstance(step.worker, Tool):
        return SubtaskSpec(
            id=step_id, worker_type=step.worker_type, kind=StepKind.TOOL, args=args or {}
        )
    return SubtaskSpec(
        id=step_id,
        worker_type=step.worker_type,
        tier=policy.tier,
        instruction=step.goal,
        text=text,
        max_output_tokens=policy.max_output_tokens,
    )


def send_stage(
    app: Celery, settings: FleetlineSettings, message: StageMessage, step: Step, step_id: str
) -> None:
    """Send one pipeline stage to its agent's or tool's queue."""
    _send(app, settings, TASK_PIPELINE_STAGE, message, step, step_id)


def send_turn(
    app: Celery, settings: FleetlineSettings, message: TurnMessage, step: Step, step_id: str
) -> None:
    """Send one debate turn (or, with `message.agent` None, the judge) to its agent's queue."""
    task = TASK_DEBATE_JUDGE if message.agent is None else TASK_DEBATE_TURN
    _send(app, settings, task, message, step, step_id)


def send_draft(app: Celery, settings: FleetlineSettings, message: DraftMessage, step: Step) -> None:
    """Send one draft of a supervised job to its agent's queue."""
    _send(app, settings, TASK_SUPERVISED_DRAFT, message, step, step.id)


def send_action(
    app: Celery, settings: FleetlineSettings, message: ActionMessage, tool: Tool, step_id: str
) -> None:
    """Send one approved action to its tool's queue (a second send of it runs nothing
    twice: the side-effect ledger decides)."""
    step = tool.step(step_id)
    _send(app, settings, TASK_SUPERVISED_ACTION, message, step, step_id)


def _send(
    app: Celery,
    settings: FleetlineSettings,
    task: str,
    message: JobMessage,
    step: Step,
    step_id: str,
) -> None:
    policy = settings.worker(step.worker_type)
    app.signature(
        task,
        kwargs={"context": message.model_dump(mode="json")},
        task_id=f"{message.job_id}:{step_id}",
        # A label, not the payload: Flower shows it, and the message stays small.
        argsrepr="()",
        kwargsrepr=f"({step_id})",
        queue=step.worker_type,
        soft_time_limit=policy.soft_time_limit_s,
        time_limit=policy.time_limit_s,
        priority=message.priority,
        headers=message.trace or None,
    ).apply_async()
