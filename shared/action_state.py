"""A supervised job's actions in Redis: the action log and the side-effect ledger.

Every action a draft proposes is written once, with the supervisor's review, when the
draft closes (`action_propose.lua`, in the draft outcome's round trip). An approved action
then moves `pending -> started -> done | failed`: `action_start.lua` writes "started with
key K" before the tool is called, `action_done.lua` writes the result in the round trip
that records the tool's outcome. A done (or failed) action is never started again, so no
retry, redelivery, replay or second approval performs it twice; a delivery that died
between the two writes leaves it `started`, and the next delivery sends it again under
the same key for the receiver to recognise. A `needs_review` action waits (`waiting`)
until `action_decide.lua` records a reviewer's decision or the review timeout's.

The job record counts its open drafts and actions (`drafts_open`, `actions_open`): the
write that brings both to 0 settles the job, and `waiting_for` lists the actions waiting
for a reviewer.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field

from fleetline.shared import keys
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.scripts import load_script

# The states of an action's run; `closed`: never runs (blocked or rejected).
WAITING, PENDING, STARTED, DONE, FAILED, CLOSED = (
    "waiting",
    "pending",
    "started",
    "done",
    "failed",
    "closed",
)


class ActionEntry(BaseModel):
    """One action as `fleetline actions --json` shows it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    action_id: str
    agent: str
    draft: str
    type: str
    args: dict[str, Any] = Field(default_factory=dict)
    decision: str
    violations: list[dict[str, Any]] = Field(default_factory=list)
    recommendation: str | None = None
    reviewer: str | None = None
    reason: str | None = None
    policy_version: str
    idempotency_key: str
    state: str = PENDING
    attempts: int = 0
    review_by: float | None = None
    executed_at: float | None = None
    result: dict[str, Any] | None = None
    # Where the draft and the action sit in the job, to list them in order.
    order: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Counts:
    """A supervised job's open drafts and actions after a write; `changed`: this write
    moved them."""

    changed: bool
    drafts_open: int
    actions_open: int

    @property
    def settled(self) -> bool:
        """Every draft closed and every action ended: the job can end."""
        return self.drafts_open == 0 and self.actions_open == 0


@dataclass(frozen=True)
class Decided:
    """What `decide` did: `code` as action_decide.lua replies, and the action's decision
    and state (as they were when it was not waiting)."""

    code: int
    decision: str = ""
    state: str = ""
    counts: Counts | None = None


class ActionStore:
    """Supervised jobs' action logs and ledgers. The client is injected."""

    def __init__(self, client: redis.Redis, finished_ttl_s: int) -> None:
        self.client = client
        self._keep_s = finished_ttl_s + keys.PATTERN_KEEP_EXTRA_S
        self._propose = load_script(client, "action_propose")
        self._decide = load_script(client, "action_decide")
        self._start = load_script(client, "action_start")
        self._done = load_script(client, "action_done")

    def queue_propose(
        self, trip: RoundTrip, job_id: str, draft: str, entries: list[ActionEntry], actor: str
    ) -> int:
        """Queue a draft's reviewed actions; read the reply with `counts`."""
        args: list[Any] = [job_id, draft, len(entries), time.time(), actor, self._keep_s]
        for entry in entries:
            body = entry.model_dump_json(
                include={
                    "action_id",
                    "agent",
                    "draft",
                    "type",
                    "args",
                    "violations",
                    "recommendation",
                    "policy_version",
                    "idempotency_key",
                    "review_by",
                    "order",
                }
            )
            args += [entry.action_id, entry.decision, body, repr(entry.review_by or 0.0)]
        return trip.script(
            self._propose,
            [
                keys.job(job_id),
                keys.job_audit(job_id),
                keys.job_actions(job_id),
                keys.review_deadlines(),
            ],
            args,
        )

    @staticmethod
    def counts(reply: Any) -> Counts | None:
        """The open counts a propose, decide or done reply carries (None: the job ended
        or is gone)."""
        code = int(reply[0])
        if code < 0:
            return None
        return Counts(code == 1, int(reply[1]), int(reply[2]))

    def open_counts(self, job_id: str) -> Counts | None:
        """The job's open drafts and actions as they are (None: the job is gone)."""
        drafts, acts = self.client.hmget(keys.job(job_id), ["drafts_open", "actions_open"])
        if drafts is None or acts is None:
            return None
        return Counts(False, int(drafts), int(acts))

    def decide(
        self, job_id: str, action_id: str, decision: str, reviewer: str, reason: str
    ) -> Decided:
        """Record a reviewer's decision (`approved` or `rejected`) on a waiting action."""
        reply = self._decide(
            keys=[
                keys.job(job_id),
                keys.job_audit(job_id),
                keys.job_actions(job_id),
                keys.review_deadlines(),
            ],
            args=[job_id, action_id, decision, reviewer, reason, time.time(), self._keep_s],
        )
        code = int(reply[0])
        if code == 1:
            return Decided(1, _text(reply[1]), counts=Counts(True, int(reply[2]), int(reply[3])))
        if code == 0:
            counts = Counts(False, int(reply[3]), int(reply[4]))
            return Decided(0, _text(reply[1]), _text(reply[2]), counts)
        return Decided(code, _text(reply[1]) if len(reply) > 1 else "")

    def start(self, job_id: str, action_id: str, key: str, actor: str) -> tuple[int, str]:
        """Write "started with `key`" before the tool is called: (1, attempt) to call it,
        else (code, why) as action_start.lua replies."""
        reply = self._start(
            keys=[keys.job(job_id), keys.job_audit(job_id), keys.job_actions(job_id)],
            args=[action_id, key, time.time(), actor, self._keep_s],
        )
        return int(reply[0]), _text(reply[1]) if len(reply) > 1 else ""

    def queue_done(
        self,
        trip: RoundTrip,
        job_id: str,
        action_id: str,
        ok: bool,
        result: dict[str, Any],
        actor: str,
    ) -> int:
        """Queue the action's end (done with `result`, or failed); read with `counts`."""
        return trip.script(
            self._done,
            [keys.job(job_id), keys.job_audit(job_id), keys.job_actions(job_id)],
            [action_id, "1" if ok else "0", json.dumps(result), time.time(), actor, self._keep_s],
        )

    def entries(self, job_id: str) -> list[ActionEntry]:
        """Every action of the job, in the order its drafts proposed them."""
        raw = {_text(k): _text(v) for k, v in self.client.hgetall(keys.job_actions(job_id)).items()}
        found = []
        for name, body in raw.items():
            if ":" in name:
                continue
            fields = {
                k.removeprefix(f"{name}:"): v for k, v in raw.items() if k.startswith(f"{name}:")
            }
            found.append(_entry(json.loads(body), fields))
        return sorted(found, key=lambda e: e.order)

    def entry(self, job_id: str, action_id: str) -> ActionEntry | None:
        """One action of the job (None: no such action)."""
        return next((e for e in self.entries(job_id) if e.action_id == action_id), None)

    def due_reviews(self, now: float, limit: int = 100) -> list[tuple[str, str]]:
        """(job id, action id) of the reviews that have timed out."""
        members = self.client.zrangebyscore(keys.review_deadlines(), 0, now, 0, limit)
        return [tuple(_text(m).split(" ", 1)) for m in members]  # type: ignore[misc]

    def forget_review(self, job_id: str, action_id: str) -> None:
        """Drop a review deadline whose job or action is gone."""
        self.client.zrem(keys.review_deadlines(), f"{job_id} {action_id}")


def _entry(body: dict[str, Any], fields: dict[str, str]) -> ActionEntry:
    executed = fields.get("executed_at")
    result = fields.get("result")
    return ActionEntry.model_validate(
        {
            **body,
            "decision": fields.get("decision", ""),
            "state": fields.get("state", PENDING),
            "attempts": int(fields.get("attempts", "0")),
            "reviewer": fields.get("reviewer") or None,
            "reason": fields.get("reason") or None,
            "executed_at": float(executed) if executed else None,
            "result": json.loads(result) if result else None,
        }
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
