"""Cancelling a job: it ends `cancelled` at once, and its steps not yet started never run.

Finalising is the store's compare-and-set, so a cancel races safely with the job's own
end (whichever comes first stands) and a second cancel changes nothing. Workers read the
status in their guards' round trip: a step not yet started ends `skipped` with no call
and no hold; one already calling finishes, and its outcome is recorded but not used.
"""

from __future__ import annotations

import json

from fleetline.shared.schemas import JobStatus
from fleetline.shared.state import StateStore
from fleetline.shared.verdict import assemble


def cancel_job(store: StateStore, job_id: str, actor: str) -> bool:
    """Cancel the job on behalf of `actor` (recorded in its audit); False when it had
    already ended. Raises JobNotFound for an unknown job."""
    record = store.raw(job_id)
    if JobStatus(record.get("status", JobStatus.RUNNING.value)).terminal:
        return False
    expected = json.loads(record.get("subtask_ids", "[]"))
    wanted = set(expected)
    outcomes = [o for sid, o in store.outcomes(job_id).items() if sid in wanted]
    done = sum(1 for o in outcomes if o.status.value == "ok")
    completeness = done / len(expected) if expected else 0.0
    result = {**assemble(outcomes, expected, None), "answer": None}
    return store.finalize(job_id, JobStatus.CANCELLED, completeness, result, actor, "cancelled")
