"""Failure handling with real processes: gates, deadlines, dead letters, crashes, outages."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import redis

from fleetline.producer.submit import Producer
from fleetline.shared.deadletters import DeadLetterStore
from fleetline.shared.errors import StoreUnavailable
from fleetline.shared.schemas import JobStatus, OutcomeStatus
from fleetline.shared.settings import load_settings
from tests.integration.conftest import FleetFactory

pytestmark = pytest.mark.integration


def brief(n_docs: int, marker: str = "", **spec: object) -> dict[str, object]:
    docs = [
        {
            "id": f"d{i}",
            "text": f"Acme Corp grew revenue {10 + i}% in 2025 {marker}. Bank stocks rose.",
        }
        for i in range(n_docs)
    ]
    return {
        "kind": "research_brief",
        "tenant": "t1",
        "input": {"question": "How did Acme grow revenue?", "documents": docs},
        **spec,
    }


def calls(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_invalid_output_is_corrected_with_the_validation_errors(
    start_fleet: FleetFactory, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    fleet = start_fleet(FLEETLINE_SIM_MALFORMED_RATE="1", FLEETLINE_SIM_CALL_LOG=str(log))
    receipt = fleet.producer.submit(brief(2, deadline_s=30))
    job = fleet.wait(receipt.job_id)

    assert job.status is JobStatus.SUCCEEDED
    assert all(o.status is OutcomeStatus.OK and o.output for o in job.subtasks)
    made = calls(log)
    first = [c for c in made if not c["correction"]]
    corrected = [c for c in made if c["correction"]]
    # Every subtask was asked once, refused by the gate, and asked again with the errors.
    assert len(first) == len(corrected) == len(job.subtasks)
    assert all(isinstance(c["correction"], str) and ":" in c["correction"] for c in corrected)


def test_invalid_output_past_the_corrections_ends_invalid_and_stays_out(
    start_fleet: FleetFactory,
) -> None:
    fleet = start_fleet(
        FLEETLINE_SIM_MALFORMED_RATE="1",
        FLEETLINE_WORKERS__CLASSIFICATION__CORRECTION_ATTEMPTS="0",
    )
    receipt = fleet.producer.submit(brief(2, deadline_s=30))
    job = fleet.wait(receipt.job_id)

    classified = [o for o in job.subtasks if o.worker_type == "classification"]
    assert {o.status for o in classified} == {OutcomeStatus.INVALID_OUTPUT}
    assert all(o.output is None and o.error and o.cost_usd > 0 for o in classified)
    assert job.status is JobStatus.DEGRADED
    assert job.result is not None and job.result["labels"] == {}, (
        "invalid output never reaches synthesis"
    )


def test_watchdog_answers_on_time_with_classification_stalled(start_fleet: FleetFactory) -> None:
    fleet = start_fleet(FLEETLINE_SIM_STALL_TYPES="classification", FLEETLINE_SIM_LATENCY_MS="50")
    started = time.time()
    receipt = fleet.producer.submit(brief(3, deadline_s=8))
    job = fleet.wait(receipt.job_id, timeout_s=20)
    finished_at = job.finished_at or 0

    assert job.status is JobStatus.DEGRADED
    assert finished_at - started <= 8 + 1, f"finalised {finished_at - started:.2f}s after submit"
    classified = [o for o in job.subtasks if o.worker_type == "classification"]
    assert all(o.status is OutcomeStatus.TIMED_OUT for o in classified)
    extracted = [o for o in job.subtasks if o.worker_type == "extraction"]
    assert all(o.status is OutcomeStatus.OK for o in extracted)
    assert 0 < job.completeness < 1


def test_poison_messages_are_dead_lettered_while_other_jobs_flow(
    start_fleet: FleetFactory, redis_client: redis.Redis
) -> None:
    fleet = start_fleet(
        FLEETLINE_SIM_CRASH_MARKER="#crash-me",
        FLEETLINE_SIM_CRASH_TYPES="extraction",
        FLEETLINE_WORKERS__EXTRACTION__POOL="prefork",
        FLEETLINE_WORKERS__EXTRACTION__CONCURRENCY="2",
        FLEETLINE_WORKERS__EXTRACTION__RETRY_BACKOFF_S="0.05",
    )
    app = fleet.producer.app
    # An unknown task name, and a body that is not JSON at all.
    app.send_task("fleetline.no_such_task", args=({"x": 1},), queue="extraction")
    with app.producer_or_acquire() as producer:
        producer.publish(
            b"\x80\x04not json",
            exchange="extraction",
            routing_key="extraction",
            content_type="application/json",
            content_encoding="utf-8",
            headers={"task": "extraction", "id": "garbage-1"},
        )
    poisoned = fleet.producer.submit(brief(1, marker="#crash-me", deadline_s=40))
    healthy = [fleet.producer.submit(brief(2, deadline_s=40)) for _ in range(3)]

    for receipt in healthy:
        assert fleet.wait(receipt.job_id).status is JobStatus.SUCCEEDED, fleet.logs()
    job = fleet.wait(poisoned.job_id)
    assert job.status is JobStatus.DEGRADED, fleet.logs()
    extraction = next(o for o in job.subtasks if o.worker_type == "extraction")
    assert extraction.status is OutcomeStatus.FAILED and extraction.error
    assert extraction.error.category == "poison"

    letters = DeadLetterStore(redis_client, 100)
    deadline = time.monotonic() + 10
    while letters.count() < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    reasons = {letter.reason: letter for letter in letters.list()}
    assert set(reasons) == {"unknown_task", "undecodable", "poison"}, reasons
    assert reasons["unknown_task"].task == "fleetline.no_such_task"
    assert reasons["poison"].task_id == f"{poisoned.job_id}:extract-d0"


def test_submit_fails_fast_and_clearly_when_redis_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fleetline.shared.embedded_redis import free_port

    monkeypatch.setenv("FLEETLINE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("FLEETLINE_REDIS_SUBMIT_TIMEOUT_S", "1")
    producer = Producer.from_settings(load_settings())
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="Redis unavailable"):
        producer.submit(brief(1))
    assert time.monotonic() - started < 3
    producer.app.close()
