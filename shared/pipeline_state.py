"""A pipeline's state: its stage table, its checkpoints and its runs, in the job's keys.

The stage table (`stages` on the job record) has one entry per stage of the current run,
in order. A stage closes once (`pipeline_stage.lua`, in its outcome's round trip): its
entry takes the outcome's status, attempts and cost, and an ok stage's output is
checkpointed under its step id, at the version that write gave the job, before the next
stage is sent. A resume (`pipeline_resume.lua`) starts the next run with a compare-and-set
on the job's version: the stages before its first keep their entries and checkpoints
(they are neither run nor charged again), the rest start over under step ids of the run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict

from fleetline.shared import keys
from fleetline.shared.fleet import Plan
from fleetline.shared.fleet.pipeline import run_step_id
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import OutcomeStatus, SubtaskOutcome
from fleetline.shared.scripts import load_script

PENDING = "pending"
RUNNING = "running"


class StageEntry(BaseModel):
    """One stage in a run's table, as `result --json` shows it under `stages`."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    agent: str
    status: str = PENDING
    attempts: int = 0
    cost_usd: float = 0.0
    checkpoint_version: int | None = None
    # The run whose step this entry is (an earlier one for stages a resume kept).
    run: int = 1
    step_id: str
    # The model that served it (the one a resume named, before it ran).
    model: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == OutcomeStatus.OK.value


def first_table(plan: Plan) -> list[StageEntry]:
    """The stage table of a pipeline's first run: its first stage running, the rest pending."""
    return [
        StageEntry(
            name=s.name,
            agent=s.step.worker_type,
            status=RUNNING if i == 0 else PENDING,
            step_id=run_step_id(s.name, 1),
        )
        for i, s in enumerate(plan.stages)
    ]


def resumed_table(
    table: list[StageEntry], start: int, run: int, model: str | None
) -> list[StageEntry]:
    """The table of a new run from stage `start`: the stages before it as they were, the
    others pending under the run's step ids (the first on `model`, when given)."""
    kept = table[:start]
    fresh = [
        StageEntry(
            name=e.name,
            agent=e.agent,
            status=RUNNING if i == start else PENDING,
            run=run,
            step_id=run_step_id(e.name, run),
            model=model if i == start else None,
        )
        for i, e in enumerate(table)
        if i >= start
    ]
    return [*kept, *fresh]


def table_json(table: list[StageEntry]) -> str:
    return json.dumps([e.model_dump(mode="json") for e in table])


def parse_table(raw: str | None) -> list[StageEntry]:
    return [StageEntry.model_validate(e) for e in json.loads(raw or "[]")]


@dataclass(frozen=True)
class StageRead:
    """What a stage's task reads before it runs: the job as it is, and its input."""

    exists: bool
    run: int = 0
    status: str = ""
    spec: str = ""
    table: tuple[StageEntry, ...] = ()
    checkpoint: str | None = None


@dataclass(frozen=True)
class Closed:
    """What closing a stage did (see pipeline_stage.lua): `now` it closed it (and `running`
    the job still runs); `resend`: a redelivery that must send the next stage again;
    `stale`: the job has moved to another run, or is gone."""

    now: bool = False
    running: bool = False
    resend: bool = False
    stale: bool = False
    version: int = 0


class PipelineStore:
    """Pipelines' stage tables, checkpoints and resumes. The client is injected."""

    def __init__(self, client: redis.Redis, finished_ttl_s: int) -> None:
        self.client = client
        self._keep_s = finished_ttl_s + keys.PATTERN_KEEP_EXTRA_S
        self._close = load_script(client, "pipeline_stage")
        self._resume = load_script(client, "pipeline_resume")

    def read(self, job_id: str, input_from: str | None) -> StageRead:
        """The job's run, status, spec and stage table, and the checkpoint `input_from`
        names (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(keys.job(job_id), ["run", "status", "spec", "stages"])
        pipe.hget(keys.job_checkpoints(job_id), input_from or "")
        (run, status, spec, stages), checkpoint = pipe.execute()
        if run is None or status is None:
            return StageRead(exists=False)
        return StageRead(
            exists=True,
            run=int(run),
            status=_text(status),
            spec=_text(spec),
            table=tuple(parse_table(_text(stages) if stages else None)),
            checkpoint=_text(checkpoint) if checkpoint is not None else None,
        )

    def checkpoints(self, job_id: str) -> dict[str, Any]:
        """Every checkpoint of the job, by step id."""
        raw = self.client.hgetall(keys.job_checkpoints(job_id))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def queue_close(
        self,
        trip: RoundTrip,
        job_id: str,
        run: int,
        index: int,
        outcome: SubtaskOutcome,
        next_step_id: str | None,
        actor: str,
    ) -> int:
        """Queue the stage's close; read its reply with `closed`."""
        ok = outcome.status is OutcomeStatus.OK and outcome.output is not None
        return trip.script(
            self._close,
            [
                keys.job(job_id),
                keys.job_audit(job_id),
                keys.job_checkpoints(job_id),
                keys.job_outcomes(job_id),
            ],
            [
                run,
                index,
                outcome.subtask_id,
                "1" if ok else "0",
                json.dumps(outcome.output) if ok else "",
                outcome.status.value,
                outcome.attempts,
                repr(outcome.cost_usd),
                next_step_id or "",
                time.time(),
                self._keep_s,
                actor,
                outcome.model or "",
            ],
        )

    @staticmethod
    def closed(reply: Any) -> Closed:
        code = int(reply[0])
        if code in (1, 2):
            return Closed(now=True, running=code == 1, version=int(reply[1]))
        if code == 0:
            return Closed(resend=int(reply[1]) == 1)
        return Closed(stale=True)

    def resume(
        self,
        job_id: str,
        expected_version: int,
        run: int,
        table: list[StageEntry],
        pattern: dict[str, Any],
        deadline_at: float,
        actor: str,
        model: str | None,
        refusing_keys: list[str],
    ) -> tuple[int, Any]:
        """Start run `run` if the job is still at `expected_version`: (code, detail) as
        pipeline_resume.lua replies."""
        ttl = int(deadline_at - time.time()) + keys.UNFINISHED_GRACE_TTL_S
        start = next(e for e in table if e.run == run)
        reply = self._resume(
            keys=[
                keys.job(job_id),
                keys.job_audit(job_id),
                keys.deadlines(),
                keys.job_outcomes(job_id),
                keys.job_checkpoints(job_id),
                *refusing_keys,
            ],
            args=[
                job_id,
                expected_version,
                run,
                table_json(table),
                json.dumps(pattern),
                json.dumps([e.step_id for e in table]),
                repr(deadline_at),
                ttl,
                time.time(),
                actor,
                start.name,
                model or "",
            ],
        )
        return int(reply[0]), (_text(reply[1]) if len(reply) > 1 else None)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
