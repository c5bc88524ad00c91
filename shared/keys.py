"""Every Redis key Fleetline writes, and every TTL, in one place.

Keys of one job share the `{job_id}` hash tag so that one Lua script may touch them all,
on a single Redis or a cluster.
"""

from __future__ import annotations

PREFIX = "fl"

# Jobs still pending or running keep their keys at least this long past their deadline,
# so that a job nobody finalises (every worker gone) still ages out.
UNFINISHED_GRACE_TTL_S = 86_400
# An idempotency key lives exactly as long as the job it points at.


def job(job_id: str) -> str:
    """HASH: the job record (status, version, spec, result, cost, ...)."""
    return f"{PREFIX}:job:{{{job_id}}}"


def job_audit(job_id: str) -> str:
    """STREAM: one entry per state change of the job."""
    return f"{PREFIX}:job:{{{job_id}}}:audit"


def job_outcomes(job_id: str) -> str:
    """HASH: subtask id -> SubtaskOutcome JSON; HSETNX makes recording idempotent."""
    return f"{PREFIX}:job:{{{job_id}}}:outcomes"


def idempotency(tenant: str, key: str) -> str:
    """STRING: the job id an idempotency key already created."""
    return f"{PREFIX}:idem:{tenant}:{key}"


def deadlines() -> str:
    """ZSET: job id scored by its deadline; the watchdog finalises overdue members."""
    return f"{PREFIX}:deadlines"


# A delivery that died mid-run leaves its in-flight mark behind; the mark outlives any
# redelivery (visibility timeout plus restore scan), then goes by itself.
INFLIGHT_TTL_S = 2 * 3600


def inflight(job_id: str, subtask_id: str) -> str:
    """STRING: deliveries of a subtask that started and have not finished (crash counter)."""
    return f"{PREFIX}:job:{{{job_id}}}:inflight:{subtask_id}"


def dead_letters() -> str:
    """STREAM: messages that could not be run (capped by settings.celery.dead_letter_max)."""
    return f"{PREFIX}:dlq"
