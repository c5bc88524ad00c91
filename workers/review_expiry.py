"""Reviews that time out: an action still waiting for a reviewer at its review deadline
counts as rejected.

Every worker's watchdog runs this with the deadline watchdog, each interval. Deciding is
exactly-once (`action_decide.lua` only moves a waiting action), so two workers expiring
the same review at once reject it once; the one whose rejection settles the job ends it.
"""

from __future__ import annotations

import logging

from fleetline.shared.action_state import ActionStore
from fleetline.shared.state import StateStore
from fleetline.shared.supervised_end import end_if_settled

log = logging.getLogger(__name__)

ACTOR = "review_timeout"


def expire_reviews(store: StateStore, actions: ActionStore, now: float) -> list[str]:
    """Reject every action whose review has timed out; the ids of those rejected now."""
    rejected = []
    for job_id, action_id in actions.due_reviews(now):
        decided = actions.decide(
            job_id, action_id, "rejected", ACTOR, "no reviewer decided before the review timeout"
        )
        if decided.code in (-3, -4, -2) or (decided.code == 0 and decided.decision):
            # The job or action is gone, the job has ended, or it was decided meanwhile.
            actions.forget_review(job_id, action_id)
        if decided.code == 1:
            rejected.append(action_id)
            log.info("action %s of job %s rejected: its review timed out", action_id, job_id)
            end_if_settled(store, actions, job_id, decided.counts, ACTOR)
    return rejected
