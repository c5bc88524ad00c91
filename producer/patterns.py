"""Submitting a pipeline, a debate or a supervised job: the edge checks, the record's
fields, the first steps.

A fan-out is sent whole as one chord; a pipeline sends its first stage, a debate its first
round, a supervised job its drafts, and the workers send the rest as each stage or round
closes (or as the supervisor approves each action).
"""

from __future__ import annotations

import json

from celery import Celery

from fleetline.shared.debate_budget import round_bound
from fleetline.shared.debate_state import first_pattern
from fleetline.shared.errors import SpecError
from fleetline.shared.fleet import Plan
from fleetline.shared.fleet.debate import round_step_id
from fleetline.shared.pattern_messages import (
    DraftMessage,
    StageMessage,
    TurnMessage,
    send_draft,
    send_stage,
    send_turn,
)
from fleetline.shared.pipeline_state import first_table, table_json
from fleetline.shared.schemas import JobSpec
from fleetline.shared.settings import FleetlineSettings


def check(plan: Plan, spec: JobSpec, settings: FleetlineSettings) -> None:
    """Refuse what the plan's shape cannot run: a debate whose first round and judge may
    cost more than the job's budget (its first round is reserved before it runs); a
    supervised job whose deadline would end it before a review times out."""
    if plan.shape == "supervised":
        profile = settings.latency_profiles[
            spec.latency_profile or settings.default_latency_profile
        ]
        deadline_s = spec.deadline_s or profile.total_s
        own = plan.supervision.review_timeout_s if plan.supervision is not None else None
        timeout_s = settings.supervisor.timeout_for(own)
        if deadline_s <= timeout_s:
            raise SpecError(
                [
                    (
                        "deadline_s",
                        f"{deadline_s:g}s is not longer than the review timeout "
                        f"({timeout_s:g}s, FLEETLINE_SUPERVISOR_REVIEW_TIMEOUT_S): an action "
                        "waiting for review would outlive its job",
                    )
                ]
            )
        return
    if plan.shape != "debate":
        return
    usd, tokens = round_bound(settings, plan, [])
    if usd > spec.budget_usd:
        raise SpecError(
            [("budget_usd", f"a round of this debate and its judge may cost up to ${usd:.6f}")]
        )
    if tokens > spec.max_tokens:
        raise SpecError(
            [("max_tokens", f"a round of this debate and its judge may take {tokens} tokens")]
        )


def record_fields(plan: Plan) -> dict[str, str]:
    """The job record's fields of the plan's shape (none for a fan-out)."""
    if plan.shape == "pipeline":
        table = first_table(plan)
        # The run, the stage it started from and the model a resume named for that stage.
        pattern = {"run": 1, "run_from": table[0].name, "run_model": None, "runs": []}
        return {"run": "1", "stages": table_json(table), "pattern": json.dumps(pattern)}
    if plan.shape == "debate":
        return {
            "round": "1",
            "pattern": json.dumps(first_pattern()),
            "subtask_ids": json.dumps([round_step_id(s.id, 1) for s in plan.steps]),
        }
    if plan.shape == "supervised":
        return {"drafts_open": str(len(plan.steps)), "actions_open": "0", "waiting_for": "[]"}
    return {}


def send_first(
    app: Celery,
    settings: FleetlineSettings,
    job_id: str,
    spec: JobSpec,
    plan: Plan,
    deadline_at: float,
    priority: int,
    trace: dict[str, str],
) -> None:
    """Send a pipeline's first stage, a debate's first round or a supervised job's drafts
    (`trace`: the job's trace
    context, which every later message of the job carries on)."""
    job: dict[str, object] = {
        "job_id": job_id,
        "kind": spec.kind,
        "tenant": spec.tenant,
        "deadline_at": deadline_at,
        "budget_usd": spec.budget_usd,
        "budget_tokens": spec.max_tokens,
        "priority": priority,
        "trace": trace,
    }
    if plan.shape == "pipeline":
        first = plan.stages[0]
        message = StageMessage.model_validate({**job, "run": 1, "index": 0})
        send_stage(app, settings, message, first.step, first.name)
        return
    if plan.shape == "supervised":
        for index, step in enumerate(plan.steps):
            send_draft(app, settings, DraftMessage.model_validate({**job, "index": index}), step)
        return
    for index, step in enumerate(plan.steps):
        turn = TurnMessage.model_validate({**job, "round": 1, "agent": index})
        send_turn(app, settings, turn, step, round_step_id(step.id, 1))
