"""The job state store: versioned records with compare-and-set updates and an audit trail.

Every write is one Lua script, so a state change and its audit entry land together or not
at all, and each subtask's bookkeeping is a single round trip.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from fleetline.shared import keys, metrics
from fleetline.shared.errors import ConcurrencyError, JobNotFound
from fleetline.shared.pattern_record import with_pattern
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import JobResult, JobStatus, SubtaskOutcome
from fleetline.shared.scripts import load_script

_TERMINAL = [s.value for s in JobStatus if s.terminal]
_ACTIVE = [JobStatus.PENDING.value, JobStatus.RUNNING.value]


@dataclass(frozen=True)
class Created:
    """What create_job did: the job's id, whether it is new, or what refused it."""

    job_id: str
    created: bool
    refused_by: str | None = None


@dataclass(frozen=True)
class AuditEntry:
    """One state change: who made it, what it was, and the version it produced."""

    id: str
    actor: str
    action: str
    version: int
    fields: dict[str, str]


class StateStore:
    """Job records in Redis. One instance per process; the client is injected."""

    def __init__(
        self, client: redis.Redis, finished_ttl_s: int, once_ttl_s: int = keys.CLOSING_ONCE_TTL_S
    ) -> None:
        """once_ttl_s: how long an attempt's charged-once marker lives
        (keys.closing_once_ttl_s)."""
        self.client = client
        self._r = client
        self._finished_ttl_s = finished_ttl_s
        self._once_ttl_s = once_ttl_s
        self._create = load_script(client, "create_job")
        self._update = load_script(client, "update_job")
        self._finalize = load_script(client, "finalize_job")
        self._record = load_script(client, "record_outcome")
        self._charge_attempt = load_script(client, "charge_attempt")

    def create_job(
        self,
        job_id: str,
        fields: dict[str, str],
        deadline_at: float,
        idempotency_key: str | None,
        tenant: str,
        actor: str = "producer",
        refusing_keys: list[str] | None = None,
    ) -> Created:
        """Create the record, running, in one round trip; an existing idempotency key wins.

        refusing_keys: keys whose presence refuses the job (tripped kill switches); the
        first one found is returned in `Created.refused_by`.
        """
        idem = keys.idempotency(tenant, idempotency_key) if idempotency_key else ""
        ttl = int(deadline_at - time.time()) + keys.UNFINISHED_GRACE_TTL_S
        code, value = self._create(
            keys=[
                keys.job(job_id),
                keys.job_audit(job_id),
                keys.deadlines(),
                idem,
                *(refusing_keys or []),
            ],
            args=[job_id, json.dumps(fields), deadline_at, ttl, time.time(), actor],
        )
        if int(code) == -1:
            return Created(job_id, False, refused_by=_text(value))
        return Created(_text(value), int(code) == 1)

    def update(
        self,
        job_id: str,
        expected_version: int | None,
        changes: dict[str, str],
        actor: str,
        action: str = "updated",
        from_statuses: list[str] | None = None,
    ) -> int:
        """Compare-and-set: apply `changes` if the version (and status) still match.

        Raises ConcurrencyError when another writer got there first, JobNotFound when the
        record is gone. Returns the new version.
        """
        reply = self._update(
            keys=[keys.job(job_id), keys.job_audit(job_id)],
            args=[
                "" if expected_version is None else expected_version,
                json.dumps(changes),
                actor,
                action,
                time.time(),
                json.dumps(from_statuses) if from_statuses else "",
            ],
        )
        code = int(reply[0])
        if code == -3:
            raise JobNotFound(f"no job {job_id}")
        if code == -1:
            raise ConcurrencyError(
                f"job {job_id}: expected version {expected_version}, found {int(reply[1])}"
            )
        if code == -2:
            raise ConcurrencyError(f"job {job_id}: status is {_text(reply[1])}")
        return code

    def record_outcome(self, job_id: str, outcome: SubtaskOutcome, actor: str) -> bool:
        """Store a subtask's outcome and add its cost, once. False for a duplicate."""
        trip = RoundTrip(self._r)
        index = self.queue_record(trip, job_id, outcome, actor)
        return self.recorded(trip.execute()[index])

    def queue_record(
        self, trip: RoundTrip, job_id: str, outcome: SubtaskOutcome, actor: str
    ) -> int:
        """Queue `record_outcome` on a trip; read its reply with `recorded`."""
        # Counted as sent (a duplicate delivery's refused write too): an agent that thrashes
        # shows either way.
        metrics.state_mutation(outcome.worker_type)
        return trip.script(
            self._record,
            [keys.job(job_id), keys.job_audit(job_id), keys.job_outcomes(job_id)],
            [
                outcome.subtask_id,
                # Defaults left out (a third of an outcome): every reader parses the model.
                outcome.model_dump_json(exclude_defaults=True),
                repr(outcome.cost_usd),
                outcome.status.value,
                actor,
                time.time(),
            ],
        )

    @staticmethod
    def recorded(reply: Any) -> bool:
        """Whether a queued record wrote the outcome (False: a duplicate, or the job is gone)."""
        return int(reply[0]) == 1

    @staticmethod
    def fan_in_due(reply: Any) -> str | None:
        """The fan-in message a queued record's reply tells this worker to send: its record
        completed a fan-out's set of outcomes (see fan_in_join), else None."""
        return _text(reply[2]) if len(reply) > 2 and reply[2] else None

    def queue_charge_attempt(
        self,
        trip: RoundTrip,
        job_id: str,
        subtask_id: str,
        attempt: int,
        cost_usd: float,
        actor: str,
    ) -> int:
        """Queue adding a retried attempt's charges to its job's cost (once, audited): the
        attempt records no outcome, but its calls were charged in the ledger."""
        return trip.script(
            self._charge_attempt,
            [
                keys.job(job_id),
                keys.job_audit(job_id),
                keys.attempt_charged(job_id, subtask_id, attempt),
            ],
            [
                repr(cost_usd),
                subtask_id,
                attempt,
                actor,
                repr(time.time()),
                self._once_ttl_s,
            ],
        )

    def finalize(
        self,
        job_id: str,
        status: JobStatus,
        completeness: float,
        result: dict[str, Any] | None,
        actor: str,
        reason: str = "",
        extra_cost_usd: float = 0.0,
    ) -> bool:
        """Move the job to a terminal status exactly once; False if it was already final."""
        trip = RoundTrip(self._r)
        index = self.queue_finalize(
            trip, job_id, status, completeness, result, actor, reason, extra_cost_usd
        )
        return self.finalized(trip.execute()[index])

    def queue_finalize(
        self,
        trip: RoundTrip,
        job_id: str,
        status: JobStatus,
        completeness: float,
        result: dict[str, Any] | None,
        actor: str,
        reason: str = "",
        extra_cost_usd: float = 0.0,
        run: int | None = None,
    ) -> int:
        """Queue `finalize` on a trip; read its reply with `finalized`. A job with a
        `callback_url` is then due for its callback. `run`: a pipeline's run that must
        still be the job's (an earlier run's stage never ends a later run)."""
        return trip.script(
            self._finalize,
            [
                keys.job(job_id),
                keys.job_audit(job_id),
                keys.job_outcomes(job_id),
                keys.deadlines(),
                keys.callbacks_due(),
            ],
            [
                job_id,
                status.value,
                repr(completeness),
                json.dumps(result),
                repr(extra_cost_usd),
                actor,
                time.time(),
                self._finished_ttl_s,
                reason,
                "" if run is None else str(run),
            ],
        )

    @staticmethod
    def finalized(reply: Any) -> bool:
        """Whether a queued finalize made the job final (False: it already was). A job
        made final is counted in the job metrics here: read each reply once."""
        if int(reply[0]) != 1:
            return False
        if len(reply) >= 7:
            _, _, status, kind, created, ended, reason = (_text(v) for v in reply[:7])
            metrics.job_ended(kind, status, float(ended) - float(created), reason)
        return True

    def outcomes(self, job_id: str) -> dict[str, SubtaskOutcome]:
        """The outcomes recorded so far, by subtask id."""
        raw = self._r.hgetall(keys.job_outcomes(job_id))
        return {_text(k): SubtaskOutcome.model_validate_json(v) for k, v in raw.items()}

    def raw(self, job_id: str) -> dict[str, str]:
        """The job record's fields as stored."""
        raw = self._r.hgetall(keys.job(job_id))
        if not raw:
            raise JobNotFound(f"no job {job_id}")
        return {_text(k): _text(v) for k, v in raw.items()}

    def get(self, job_id: str) -> JobResult:
        """The job as a caller sees it: status, result, cost and every recorded outcome."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hgetall(keys.job(job_id))
        pipe.hvals(keys.job_outcomes(job_id))
        record, outcome_values = pipe.execute()
        if not record:
            raise JobNotFound(f"no job {job_id}")
        fields = {_text(k): _text(v) for k, v in record.items()}
        order = {sid: i for i, sid in enumerate(json.loads(fields.get("subtask_ids", "[]")))}
        outcomes = sorted(
            (SubtaskOutcome.model_validate_json(v) for v in outcome_values),
            key=lambda o: order.get(o.subtask_id, len(order)),
        )
        stored = json.loads(fields["result"]) if fields.get("result") else None
        result = with_pattern(stored, fields)
        return JobResult(
            job_id=job_id,
            kind=fields.get("kind", ""),
            tenant=fields.get("tenant", ""),
            status=JobStatus(fields["status"]),
            completeness=float(fields.get("completeness", 0.0)),
            result=result,
            cost_usd=float(fields.get("cost_usd", 0.0)),
            subtasks=outcomes,
            version=int(fields["version"]),
            created_at=float(fields.get("created_at", 0.0)),
            finished_at=float(fields["finished_at"]) if fields.get("finished_at") else None,
            deadline_at=float(fields.get("deadline_at", 0.0)),
            waiting_for=json.loads(fields.get("waiting_for") or "[]"),
        )

    def progress(self, job_id: str) -> tuple[JobStatus, int]:
        """The job's status and how many outcomes it has, in one cheap round trip."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hget(keys.job(job_id), "status")
        pipe.hlen(keys.job_outcomes(job_id))
        status, done = pipe.execute()
        if status is None:
            raise JobNotFound(f"no job {job_id}")
        return JobStatus(_text(status)), int(done)

    def audit(self, job_id: str) -> list[AuditEntry]:
        """Every state change of the job, oldest first; an entry's id is its place in the
        trail (1, 2, ...), or its stream id in a trail written before (keys.job_audit)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.xrange(keys.job_audit_stream(job_id))
        pipe.lrange(keys.job_audit(job_id), 0, -1)
        streamed, listed = pipe.execute()
        found = [(_text(i), {_text(k): _text(v) for k, v in f.items()}) for i, f in streamed or []]
        for place, raw in enumerate(listed or [], start=len(found) + 1):
            pairs = [str(x) for x in json.loads(raw)]
            found.append((str(place), dict(zip(pairs[::2], pairs[1::2], strict=True))))
        return [
            AuditEntry(
                id=entry_id,
                actor=fields.pop("actor", ""),
                action=fields.pop("action", ""),
                version=int(fields.pop("version", "0")),
                fields=fields,
            )
            for entry_id, fields in found
        ]

    def overdue(self, now: float, limit: int = 500) -> list[str]:
        """Jobs whose deadline has passed and that nobody has finalised yet."""
        members = self._r.zrangebyscore(keys.deadlines(), "-inf", now, start=0, num=limit)
        return [_text(m) for m in members]

    def forget_deadline(self, job_id: str) -> None:
        """Drop a deadline whose job no longer exists."""
        self._r.zrem(keys.deadlines(), job_id)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
