"""A debate's state: its turns, rounds and history, in the job's keys.

Each turn's outcome is recorded like any step's; in the same round trip it is counted in
its round (`debate_turn.lua`), and the turn that brings the round to its quorum (or is the
last to finish) closes it, once. The closing task checks for consensus and moves the
debate on (`debate_advance.lua`, once per round): the round's answers and agreement join
the history on the job record (`pattern`), then the next round's turns, or the judge, are
sent. Late turns of a closed round are recorded, not counted.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from fleetline.shared import keys
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.scripts import load_script

JUDGING = "judging"


def first_pattern() -> dict[str, Any]:
    """A debate's record before its first round closes."""
    return {
        "rounds": 0,
        "history": [],
        "agreement": [],
        "consensus": False,
        "stopped_early": False,
        "stop": None,
    }


@dataclass(frozen=True)
class TurnRead:
    """What a turn's (or the judge's) task reads before it runs."""

    exists: bool
    status: str = ""
    round: int = 0
    judging: bool = False
    spec: str = ""
    pattern: dict[str, Any] = field(default_factory=dict)
    # Whether this turn's round closed before the turn started (its quorum was in).
    closed: bool = False


class DebateStore:
    """Debates' turns and rounds. The client is injected."""

    def __init__(self, client: redis.Redis, finished_ttl_s: int) -> None:
        self.client = client
        self._keep_s = finished_ttl_s + keys.PATTERN_KEEP_EXTRA_S
        self._turn = load_script(client, "debate_turn")
        self._advance = load_script(client, "debate_advance")

    def read(self, job_id: str, round_no: int) -> TurnRead:
        """The job's status, round, spec and history, and whether `round_no` has closed."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(keys.job(job_id), ["status", "round", "phase", "spec", "pattern"])
        pipe.hexists(keys.job_rounds(job_id), f"r{round_no}:closed")
        (status, current, phase, spec, pattern), closed = pipe.execute()
        if status is None or current is None:
            return TurnRead(exists=False)
        return TurnRead(
            exists=True,
            status=_text(status),
            round=int(current),
            judging=phase is not None and _text(phase) == JUDGING,
            spec=_text(spec),
            pattern=json.loads(pattern) if pattern else first_pattern(),
            closed=bool(closed),
        )

    def queue_turn(
        self,
        trip: RoundTrip,
        job_id: str,
        round_no: int,
        agent: int,
        answered: bool,
        agents: int,
        quorum: int,
        actor: str,
    ) -> int:
        """Queue the turn's count; read its reply with `closes`."""
        return trip.script(
            self._turn,
            [keys.job(job_id), keys.job_audit(job_id), keys.job_rounds(job_id)],
            [
                round_no,
                agent,
                "1" if answered else "0",
                agents,
                quorum,
                time.time(),
                self._keep_s,
                actor,
            ],
        )

    @staticmethod
    def closes(reply: Any) -> bool:
        """Whether the queued turn closed its round (or must close it again)."""
        return int(reply[0]) == 1

    def answered(self, job_id: str, round_no: int) -> list[int]:
        """The agents (by index, in order) whose answers closed the round."""
        raw = self.client.hget(keys.job_rounds(job_id), f"r{round_no}:in")
        return sorted(int(i) for i in _text(raw).split(",")) if raw else []

    def advance(
        self,
        job_id: str,
        round_no: int,
        next_round: int | None,
        pattern: dict[str, Any],
        step_ids: list[str],
        agreement: float,
        stop: str | None,
        actor: str,
    ) -> int:
        """Move the debate on from `round_no`: 1 done now, 0 done already, < 0 the job
        has ended or is gone (see debate_advance.lua)."""
        reply = self._advance(
            keys=[keys.job(job_id), keys.job_audit(job_id)],
            args=[
                round_no,
                "" if next_round is None else next_round,
                json.dumps(pattern),
                json.dumps(step_ids),
                repr(agreement),
                stop or "",
                time.time(),
                actor,
            ],
        )
        return int(reply[0])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
