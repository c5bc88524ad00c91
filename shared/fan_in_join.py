"""A fan-out's join, kept in the job record instead of Celery's result backend.

To its users a fan-out is a chord: its steps run in parallel and one callback, the fan-in,
runs once when every outcome is in (or the watchdog ends the job at its deadline). The
producer stores the fan-in's message in the job record; `record_outcome.lua`, which
records each step's outcome, counts them in the same script, and the worker whose record
completes the set sends the message. No step result is written to a result backend, no
header message carries the callback, and no counter of Celery's is touched.

A worker that dies between its record and its send is redelivered: its record is a
duplicate then, and the script tells it to send the fan-in again. Every send carries a
claim of its own; the first fan-in to start claims the job (`fan_in_claim.lua`) and any
other send of it runs nothing.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery

from fleetline.shared import keys
from fleetline.shared.names import TASK_FAN_IN
from fleetline.shared.schemas import SubtaskOutcome
from fleetline.shared.scripts import load_script


def message_field(
    context: dict[str, Any],
    queue: str,
    priority: int,
    headers: dict[str, str],
    soft_time_limit_s: float | None,
    time_limit_s: float | None,
) -> str:
    """The job record's `fan_in` field: what the worker that completes the join sends."""
    return json.dumps(
        {
            "context": context,
            "queue": queue,
            "priority": priority,
            "headers": headers,
            "soft_time_limit": soft_time_limit_s,
            "time_limit": time_limit_s,
        },
        separators=(",", ":"),
    )


def send(app: Celery, field: str) -> None:
    """Send the fan-in a job record's `fan_in` field describes, with a claim of its own."""
    message = json.loads(field)
    context = message["context"]
    app.signature(
        TASK_FAN_IN,
        kwargs={"context": context, "claim": uuid.uuid4().hex},
        task_id=f"{context['job_id']}:{context['then']['id']}",
        argsrepr="()",
        kwargsrepr="{context}",
        # The callback is the then-step's: its queue and its time limits.
        queue=message["queue"],
        soft_time_limit=message["soft_time_limit"],
        time_limit=message["time_limit"],
        priority=message["priority"],
        headers=message["headers"] or None,
    ).apply_async()


@dataclass(frozen=True)
class Claimed:
    """What a fan-in found when it started: whether it runs, and the outcomes in plan order."""

    runs: bool
    outcomes: list[SubtaskOutcome]


class FanInClaims:
    """The fan-in's side of the join. One per process; the client is injected."""

    def __init__(self, client: redis.Redis) -> None:
        self._claim = load_script(client, "fan_in_claim")

    def claim(self, job_id: str, claim: str, then_id: str) -> Claimed:
        """Claim the job's fan-in for this send and read its steps' outcomes (the then-step's
        own, recorded by an earlier delivery of this fan-in, left out)."""
        reply = self._claim(keys=[keys.job(job_id), keys.job_outcomes(job_id)], args=[claim])
        if int(reply[0]) != 1:
            return Claimed(False, [])
        order = {sid: i for i, sid in enumerate(json.loads(reply[1]))}
        outcomes = [SubtaskOutcome.model_validate_json(raw) for raw in reply[2:]]
        outcomes = [o for o in outcomes if o.subtask_id != then_id]
        outcomes.sort(key=lambda o: order.get(o.subtask_id, len(order)))
        return Claimed(True, outcomes)
