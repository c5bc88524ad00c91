"""Every provider call is reserved before it is made: a budget is never overspent."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from fleetline.producer.replay import replay
from fleetline.producer.submit import parse_spec
from fleetline.shared import keys
from fleetline.shared.deadletters import DeadLetterStore
from fleetline.shared.ledger import NANO, Ledger
from fleetline.shared.schemas import JobResult, OutcomeStatus, SubtaskPayload
from tests.integration.conftest import FleetFactory, RunningFleet

pytestmark = pytest.mark.integration

APP = "tests.integration.budget_fleet:fleet"
# Long enough a call to read its hold while it is in flight.
SIM_LATENCY = {"FLEETLINE_SIM_LATENCY_MS": "300"}
TEXT = "Acme Corp reported revenue of $4.2 million in 2023. Its margin rose 3 percent. " * 20


def _spec(budget_usd: float) -> dict[str, object]:
    return {
        "kind": "facts_job",
        "input": {"text": TEXT},
        "budget_usd": budget_usd,
        "deadline_s": 20,
    }


def _start(start_fleet: FleetFactory, **env: str) -> RunningFleet:
    """The budget fleet, no beat, no cache (every call reaches the sim)."""
    return start_fleet(with_beat=False, FLEETLINE_APP=APP, FLEETLINE_CACHE_ENABLED="false", **env)


def _held(
    fleet: RunningFleet, client: redis.Redis, spec: dict[str, object], field: str
) -> tuple[JobResult, int]:
    """Run `spec` and read what the ledger held for its first `facts` call (`usd` in
    nano-USD, `tokens`) while the call is in flight: the fleet's sim waits SIM_LATENCY a
    call, and the record goes when the call is settled. Returns the job and the hold."""
    job_id = fleet.producer.submit(spec).job_id
    record = keys.spend_call(f"{job_id}:facts:1:sim-small")
    deadline = time.monotonic() + 20
    while (held := client.hget(record, field)) is None:
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.005)
    job = fleet.wait(job_id)
    assert not client.exists(record), "a settled call of a job keeps no record"
    return job, int(held)


def _calls(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_corrections_stop_when_the_budget_cannot_hold_another_call(
    start_fleet: FleetFactory, redis_client: redis.Redis, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    fleet = _start(
        start_fleet,
        FLEETLINE_SIM_MALFORMED_RATE="1",
        FLEETLINE_SIM_CALL_LOG=str(log),
        **SIM_LATENCY,
    )
    # A first job with room to spare shows what one call's bound is.
    roomy, held_nano = _held(fleet, redis_client, _spec(1.0), "usd")
    held = held_nano / NANO
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
    fleet = _start(start_fleet, FLEETLINE_SIM_CALL_LOG=str(log))
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
    # Steps store no result; this one does, so that the test sees it done.
    again = fleet.producer.app.send_task(
        "facts", args=(payload.model_dump(mode="json"),), ignore_result=False
    )
    deadline = time.monotonic() + 20
    while fleet.producer.app.AsyncResult(again.id).state == "PENDING":
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.1)
    assert len(_calls(log)) == before, "no model was called for a recorded step"
    assert Ledger(redis_client).job_spend(job.job_id).spent_usd == pytest.approx(spent)
    assert fleet.store.get(job.job_id).subtasks == job.subtasks


CJK = "半导体出口管制收紧后数据中心的投资计划推迟了三个季度。" * 40


def test_cjk_documents_under_a_tight_token_budget_never_bill_past_it(
    start_fleet: FleetFactory, redis_client: redis.Redis, tmp_path: Path
) -> None:
    invoice = tmp_path / "invoice.jsonl"
    fleet = _start(start_fleet, FLEETLINE_SIM_INVOICE=str(invoice), **SIM_LATENCY)
    spec = {**_spec(1.0), "input": {"text": CJK}}
    _, held_tokens = _held(fleet, redis_client, spec, "tokens")
    assert held_tokens > len(CJK), "a CJK character is held as at least one token"

    tight = int(held_tokens * 1.2)
    job = fleet.wait(fleet.producer.submit({**spec, "max_tokens": tight}).job_id)
    billed = [
        line
        for line in map(json.loads, invoice.read_text().splitlines())
        if line["job_id"] == job.job_id
    ]
    assert billed, "the first call fitted and was made"
    total = sum(int(b["tokens_in"]) + int(b["tokens_out"]) for b in billed)
    assert total <= tight, f"billed {total} tokens against max_tokens {tight}"
    assert Ledger(redis_client).job_spend(job.job_id).spent_tokens <= tight


def test_a_dead_letter_replayed_after_its_hold_was_released_calls_nothing(
    start_fleet: FleetFactory, redis_client: redis.Redis, tmp_path: Path
) -> None:
    invoice = tmp_path / "invoice.jsonl"
    fleet = _start(
        start_fleet,
        FLEETLINE_SIM_INVOICE=str(invoice),
        FLEETLINE_SIM_CRASH_MARKER="#crash-me",
        FLEETLINE_SIM_CRASH_TYPES="facts",
        FLEETLINE_WORKERS__FACTS__POOL="prefork",
        FLEETLINE_WORKERS__FACTS__CONCURRENCY="1",
        FLEETLINE_WORKERS__FACTS__RETRY_BACKOFF_S="0.05",
        # Deliveries lost with their process are retried within max_retries.
        FLEETLINE_WORKERS__FACTS__MAX_RETRIES="3",
    )
    job = fleet.wait(
        fleet.producer.submit({**_spec(1.0), "input": {"text": TEXT + "#crash-me"}}).job_id
    )
    step = next(o for o in job.subtasks if o.subtask_id == "facts")
    assert step.error is not None and step.error.category == "poison", fleet.logs()
    letters = DeadLetterStore(redis_client, 100)
    deadline = time.monotonic() + 10
    while not letters.count() and time.monotonic() < deadline:
        time.sleep(0.1)
    [letter] = [x for x in letters.list() if x.reason == "poison"]
    ledger = Ledger(redis_client)
    # The delivery that was SIGKILLed before its call leaves its hold to the sweep; the
    # one the crash guard stopped released its own.
    before = ledger.job_spend(job.job_id)

    replay(fleet.producer.app, letter)
    time.sleep(3)  # the replayed message is consumed and finds the step recorded
    assert all(fleet.fleet.alive().values()), fleet.logs()
    assert not invoice.exists() or all(
        json.loads(line)["job_id"] != job.job_id for line in invoice.read_text().splitlines()
    ), "the replay called no model"
    after = ledger.job_spend(job.job_id)
    assert after.spent_usd == before.spent_usd == 0
    # (The sweep may give a dead delivery's hold back meanwhile; nothing new is held.)
    assert after.reserved_usd <= before.reserved_usd + 1e-9, "the replay held nothing"
