"""A supervised job's tasks: each draft run and its actions reviewed, each approved action
run once.

A draft runs on its agent's queue like a debate turn (the same guards, ledger and
budget). Its actions are reviewed in plain code against the job kind's rules and the
fleet's policies, and the reviews are recorded with the draft's outcome in one round trip
(`action_propose.lua`, once per draft); then each approved action is sent to its tool's
queue. An action's task writes "started with key K" before its tool is called and the
result in the round trip that records the tool's outcome (the side-effect ledger,
`shared/action_state.py`); the tool receives the key as `idempotency_key`. Whichever
write settles the job (every draft closed, every action ended) ends it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task
from redis.exceptions import RedisError

from fleetline.shared import keys
from fleetline.shared.action_policies import ActionContext, Decision, Policies, Violation
from fleetline.shared.action_state import PENDING, STARTED, ActionEntry
from fleetline.shared.fleet import Plan, Step
from fleetline.shared.fleet.supervised import (
    ACTION_ID_ARG,
    KEY_ARG,
    ProposedAction,
    action_id,
    action_step_id,
    idempotency_key,
    proposed,
)
from fleetline.shared.outage import through_outage
from fleetline.shared.pattern_messages import (
    ActionMessage,
    DraftMessage,
    send_action,
    subtask_spec,
)
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import JobSpec, JobStatus, OutcomeStatus, SubtaskOutcome
from fleetline.shared.supervised_end import end_if_settled
from fleetline.workers.runtime import WorkerRuntime, get_runtime
from fleetline.workers.task import drive_closing, retry_after_outage, start_run

log = logging.getLogger(__name__)


def run_draft(task: Task, raw: dict[str, Any]) -> dict[str, Any]:
    """Body of the supervised draft task."""
    message = DraftMessage.model_validate(raw)
    try:
        return _draft(task, message, get_runtime())
    except RedisError as exc:
        raise retry_after_outage(task, f"a draft of {message.job_id}", exc) from exc


def run_action(task: Task, raw: dict[str, Any]) -> dict[str, Any]:
    """Body of the supervised action task."""
    message = ActionMessage.model_validate(raw)
    try:
        return _action(task, message, get_runtime())
    except RedisError as exc:
        raise retry_after_outage(task, f"action {message.action_id}", exc) from exc


def review_all(
    plan: Plan,
    policies: Policies,
    step: Step,
    index: int,
    outcome: SubtaskOutcome,
    job_id: str,
    tenant: str,
    review_by: float,
) -> list[ActionEntry]:
    """The supervisor's review of every action a draft's outcome proposes (pure)."""
    if outcome.status is not OutcomeStatus.OK:
        return []
    actions, problem = proposed(outcome.output)
    if problem is not None:
        log.warning("job %s draft %s: its actions are not readable: %s", job_id, step.id, problem)
    ctx = ActionContext(tenant=tenant, agent=step.worker_type, cost_usd=outcome.cost_usd)
    version = policies.version()
    entries = []
    for n, action in enumerate(actions):
        made = action_id(step.id, n)
        decision, violations, advice = _review_one(plan, policies, action, ctx)
        entries.append(
            ActionEntry(
                action_id=made,
                agent=step.worker_type,
                draft=step.id,
                type=action.type,
                args=action.args,
                decision=decision.value,
                violations=[v.as_log() for v in violations],
                recommendation=advice or None,
                policy_version=version,
                idempotency_key=idempotency_key(job_id, step.id, made),
                review_by=review_by if decision is Decision.NEEDS_REVIEW else None,
                order=(index, n),
            )
        )
    return entries


def _review_one(
    plan: Plan, policies: Policies, action: ProposedAction, ctx: ActionContext
) -> tuple[Decision, tuple[Violation, ...], str]:
    assert plan.supervision is not None
    tools = plan.supervision.tools
    if action.type not in tools:
        known = ", ".join(sorted(tools))
        refused = Violation("known_type", 1.0, f"no action tool {action.type!r}", "deny")
        return Decision.BLOCKED, (refused,), f"use one of the action types: {known}"
    reserved = sorted({KEY_ARG, ACTION_ID_ARG} & set(action.args))
    if reserved:
        why = f"{', '.join(reserved)} is set by the supervisor, not the agent"
        refused = Violation("reserved_args", 1.0, why, "deny")
        return Decision.BLOCKED, (refused,), f"leave out {', '.join(reserved)}"
    review = policies.review(action.type, action.args, ctx)
    return review.decision, review.violations, review.recommendation


def _draft(task: Task, message: DraftMessage, runtime: WorkerRuntime) -> dict[str, Any]:
    fields = runtime.redis.hmget(keys.job(message.job_id), ["status", "spec"])
    status, spec = (_text(v) if v is not None else None for v in fields)
    if status != JobStatus.RUNNING.value or spec is None:
        return {"job_id": message.job_id, "ran": False}
    settings = runtime.settings
    plan = settings.fleet.plan(message.kind, JobSpec.model_validate_json(spec).input)
    assert plan.supervision is not None, "a supervised plan has its supervision"
    step = plan.steps[message.index]
    subtask = subtask_spec(step, settings, step_id=step.id, text=step.text)
    run = start_run(task, message.payload(subtask), step.worker)
    outcome = drive_closing(task, run)
    timeout_s = settings.supervisor.timeout_for(plan.supervision.review_timeout_s)
    review_by = min(time.time() + timeout_s, message.deadline_at)
    policies = settings.supervisor.policies(plan.supervision.rules)
    entries = review_all(
        plan, policies, step, message.index, outcome, message.job_id, message.tenant, review_by
    )
    actor = task.request.hostname or ""

    def propose(trip: RoundTrip) -> int:
        return runtime.actions.queue_propose(trip, message.job_id, step.id, entries, actor)

    grace = settings.redis.outage_grace_s
    _, reply = through_outage(lambda: run.finish(outcome, also=propose), grace, "reviewing")
    counts = runtime.actions.counts(reply)
    if counts is None:
        return {"job_id": message.job_id, "ran": True}
    if not counts.changed:
        # A redelivery after the review was recorded: the actions it recorded are sent
        # again unless they have ended (a second send runs nothing twice).
        entries = [
            e
            for e in runtime.actions.entries(message.job_id)
            if e.draft == step.id and e.state in (PENDING, STARTED)
        ]
    for entry in entries:
        if entry.decision == Decision.APPROVED.value:
            send_one(task, message, runtime, entry)
    end_if_settled(runtime.store, runtime.actions, message.job_id, counts, actor)
    return {"job_id": message.job_id, "ran": True}


def send_one(task: Task, message: DraftMessage, runtime: WorkerRuntime, entry: ActionEntry) -> None:
    """Send an approved action to its tool's queue."""
    tool = runtime.settings.fleet.tools[entry.type]
    fields = message.model_dump(exclude={"index"})
    action = ActionMessage.model_validate({**fields, "action_id": entry.action_id})
    send_action(task.app, runtime.settings, action, tool, action_step_id(entry.action_id))


def _action(task: Task, message: ActionMessage, runtime: WorkerRuntime) -> dict[str, Any]:
    actions = runtime.actions
    entry = actions.entry(message.job_id, message.action_id)
    if entry is None:
        return {"job_id": message.job_id, "ran": False}
    actor = task.request.hostname or ""
    code, why = actions.start(message.job_id, entry.action_id, entry.idempotency_key, actor)
    if code != 1:
        # Done already (never again), not approved, or its job has ended.
        log.info("action %s of job %s not run: %s", entry.action_id, message.job_id, why)
        if code == 0:
            # The delivery that ended it may have died before ending the job.
            counts = actions.open_counts(message.job_id)
            end_if_settled(runtime.store, actions, message.job_id, counts, actor)
        return {"job_id": message.job_id, "ran": False}
    tool = runtime.settings.fleet.tools[entry.type]
    step_id = action_step_id(entry.action_id)
    args = {**entry.args, KEY_ARG: entry.idempotency_key, ACTION_ID_ARG: entry.action_id}
    subtask = subtask_spec(tool.step(step_id), runtime.settings, step_id=step_id, args=args)
    run = start_run(task, message.payload(subtask), tool)
    outcome = drive_closing(task, run)
    ok = outcome.status is OutcomeStatus.OK and outcome.output is not None
    error = outcome.error.model_dump() if outcome.error is not None else None
    result = outcome.output if ok and outcome.output is not None else {"error": error}

    def done(trip: RoundTrip) -> int:
        return actions.queue_done(trip, message.job_id, entry.action_id, ok, result, actor)

    grace = runtime.settings.redis.outage_grace_s
    _, reply = through_outage(lambda: run.finish(outcome, also=done), grace, "recording")
    end_if_settled(runtime.store, actions, message.job_id, actions.counts(reply), actor)
    return {"job_id": message.job_id, "ran": True}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
