"""How a supervised job ends: once every draft has closed and every action has ended.

Whoever makes the write that settles the job (a draft's review, an action's end, a
reviewer's rejection, a review's timeout) ends it; ending is exactly-once, so a redelivery
that ends it again changes nothing. The job succeeds when every draft answered and no
approved action failed; blocked and rejected actions are decisions, not failures.
"""

from __future__ import annotations

from typing import Any

from fleetline.shared.action_state import DONE, FAILED, ActionStore, Counts
from fleetline.shared.fleet.supervised import action_step_id
from fleetline.shared.schemas import JobStatus, OutcomeStatus
from fleetline.shared.state import StateStore


def summary(actions: ActionStore, job_id: str) -> dict[str, Any]:
    """The job's result: each action's id by how it ended, and the log."""
    entries = actions.entries(job_id)
    by: dict[str, list[str]] = {"delivered": [], "failed": [], "blocked": [], "rejected": []}
    for entry in entries:
        if entry.state == DONE:
            by["delivered"].append(entry.action_id)
        elif entry.state == FAILED:
            by["failed"].append(entry.action_id)
        elif entry.decision in ("blocked", "rejected"):
            by[entry.decision].append(entry.action_id)
    return {**by, "actions": [e.model_dump(mode="json", exclude={"order"}) for e in entries]}


def end_if_settled(
    store: StateStore, actions: ActionStore, job_id: str, counts: Counts | None, actor: str
) -> bool:
    """End the job when `counts` say it is settled; True when this call ended it."""
    if counts is None or not counts.settled:
        return False
    result = summary(actions, job_id)
    outcomes = store.outcomes(job_id)
    drafts = [o for o in outcomes.values() if not o.subtask_id.endswith(action_step_id(""))]
    answered = sum(1 for o in drafts if o.status is OutcomeStatus.OK)
    approved = len(result["delivered"]) + len(result["failed"])
    total = len(drafts) + approved
    completeness = round((answered + len(result["delivered"])) / total, 4) if total else 1.0
    full = answered == len(drafts) and not result["failed"]
    status = JobStatus.SUCCEEDED if full else JobStatus.DEGRADED
    if answered == 0:
        status = JobStatus.FAILED
    return store.finalize(job_id, status, completeness, result, actor, reason="supervised")
