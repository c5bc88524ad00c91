"""A person's review of a waiting action: `fleetline approve` and `fleetline reject`.

Approving records the decision (once: only a waiting action moves) and sends the action to
its tool's queue; approving an action that is approved but not yet done sends it again,
which runs nothing twice (the side-effect ledger decides), so an approval whose send was
lost can be repeated. Rejecting closes the action; the job ends once nothing is open.
"""

from __future__ import annotations

from celery import Celery

from fleetline.shared.action_state import PENDING, STARTED, ActionStore
from fleetline.shared.errors import FleetlineError, JobNotFound
from fleetline.shared.fleet.supervised import action_step_id
from fleetline.shared.pattern_messages import ActionMessage, send_action
from fleetline.shared.schemas import JobSpec
from fleetline.shared.settings import FleetlineSettings
from fleetline.shared.state import StateStore
from fleetline.shared.supervised_end import end_if_settled


class UnknownAction(JobNotFound):
    """The job has no such action."""


class NotWaiting(FleetlineError):
    """The action is not waiting for review (decided already, or its job has ended)."""


def decide(
    settings: FleetlineSettings,
    store: StateStore,
    app: Celery,
    job_id: str,
    action_id: str,
    approve: bool,
    reviewer: str,
    reason: str = "",
) -> str:
    """Approve or reject one waiting action; what was done, in words.

    Raises:
        JobNotFound: no such job. UnknownAction: the job has no such action.
        NotWaiting: the action was decided already, or its job has ended.
    """
    actions = ActionStore(store.client, settings.limits.finished_ttl_s)
    decision = "approved" if approve else "rejected"
    decided = actions.decide(job_id, action_id, decision, reviewer, reason)
    if decided.code == -3:
        raise JobNotFound(f"no job {job_id}")
    if decided.code == -4:
        raise UnknownAction(f"job {job_id} has no action {action_id!r}")
    if decided.code == -2:
        raise NotWaiting(f"job {job_id} has ended ({decided.decision}): nothing to decide")
    if decided.code == 0:
        resend = approve and decided.decision == "approved" and decided.state in (PENDING, STARTED)
        if not resend:
            raise NotWaiting(f"action {action_id} is {decided.decision} ({decided.state})")
        _send(settings, store, app, job_id, action_id, actions)
        return f"action {action_id} was approved already; sent again (it runs at most once)"
    if approve:
        _send(settings, store, app, job_id, action_id, actions)
        return f"action {action_id} approved and sent"
    end_if_settled(store, actions, job_id, decided.counts, reviewer)
    return f"action {action_id} rejected"


def _send(
    settings: FleetlineSettings,
    store: StateStore,
    app: Celery,
    job_id: str,
    action_id: str,
    actions: ActionStore,
) -> None:
    record = store.raw(job_id)
    spec = JobSpec.model_validate_json(record["spec"])
    entry = actions.entry(job_id, action_id)
    assert entry is not None, "decided actions exist"
    message = ActionMessage(
        job_id=job_id,
        kind=spec.kind,
        tenant=spec.tenant,
        deadline_at=float(record["deadline_at"]),
        budget_usd=spec.budget_usd,
        budget_tokens=spec.max_tokens,
        priority=9 - spec.priority,
        action_id=action_id,
    )
    tool = settings.fleet.tools[entry.type]
    send_action(app, settings, message, tool, action_step_id(action_id))
