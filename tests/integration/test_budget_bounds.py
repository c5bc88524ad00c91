"""Every provider call is reserved before it is made: a budget is never overspent."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from fleetline.producer.submit import parse_spec
from fleetline.shared import keys
from fleetline.shared.ledger import NANO, Ledger
from fleetline.shared.schemas import OutcomeStatus, SubtaskPayload
from tests.integration.conftest import FleetFactory

pytestmark = pytest.mark.integration

APP = "tests.integration.budget_fleet:fleet"
TEXT = "Acme Corp reported revenue of $4.2 million in 2023. Its margin rose 3 percent. " * 20


def _spec(budget_usd: float) -> dict[str, object]:
    return {
        "kind": "facts_job",
        "input": {"text": TEXT},
        "budget_usd": budget_usd,
        "deadline_s": 20,
    }


def _calls(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_corrections_stop_when_the_budget_cannot_hold_another_call(
    start_fleet: FleetFactory, redis_client: redis.Redis, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    fleet = start_fleet(
        with_beat=False,
        FLEETLINE_APP=APP,
        FLEETLINE_SIM_MALFORMED_RATE="1",
        FLEETLINE_SIM_CALL_LOG=str(log),
        FLEETLINE_CACHE_ENABLED="false",
    )
    # A first job with room to spare shows what one call's bound is.
    roomy = fleet.wait(fleet.producer.submit(_spec(1.0)).job_id)
    first_id = f"{roomy.job_id}:facts:1:sim-small"
    held = int(redis_client.hget(keys.spend_call(first_id), "usd") or 0) / NANO
    assert held > 0
    step = next(o for o in roomy.subtasks if o.subtask_id == "facts")
    assert step.status is OutcomeStatus.OK, "with room, the correction fixes the answer"

    # Every first answer is malformed, and the budget holds 1.1 worst-case calls.
    budget = round(held * 1.1, 9)
    job = fleet.wait(fleet.producer.submit(_spec(budget)).job_id)
    step = next(o for o in job.subtasks if o.subtask_id == "facts")
    assert step.status is OutcomeStatus.INVALID_OUTPUT and step.error is not None
    assert "no further call" in step.error.message
    made = [c for c in _calls(log) if str(c["call_id"]).startswith(job.job_id)]
    assert [c["correction"] for c in made] == [None], "the re-ask was never sent"
    spent = Ledger(redis_client).job_spend(job.job_id)
    assert spent.spent_usd == pytest.approx(step.cost_usd)
    assert spent.spent_usd <= budget and job.cost_usd <= budget
    assert spent.reserved_usd == 0, "no hold is left behind"


def test_a_step_delivered_again_after_its_outcome_is_recorded_calls_nothing(
    start_fleet: FleetFactory, redis_client: redis.Redis, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    fleet = start_fleet(
        with_beat=False,
        FLEETLINE_APP=APP,
        FLEETLINE_SIM_CALL_LOG=str(log),
        FLEETLINE_CACHE_ENABLED="false",
    )
    job = fleet.wait(fleet.producer.submit(_spec(1.0)).job_id)
    before = len(_calls(log))
    spent = Ledger(redis_client).job_spend(job.job_id).spent_usd
    # The same message again, as a redelivery would bring it.
    _, planned = parse_spec(_spec(1.0), fleet.settings)
    payload = SubtaskPayload(
        job_id=job.job_id,
        tenant=job.tenant,
        deadline_at=time.time() + 20,
        subtask=planned.subtasks[0],
        budget_usd=1.0,
    )
    again = fleet.producer.app.send_task("facts", args=(payload.model_dump(mode="json"),))
    deadline = time.monotonic() + 20
    while fleet.producer.app.AsyncResult(again.id).state == "PENDING":
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.1)
    assert len(_calls(log)) == before, "no model was called for a recorded step"
    assert Ledger(redis_client).job_spend(job.job_id).spent_usd == pytest.approx(spent)
    assert fleet.store.get(job.job_id).subtasks == job.subtasks
