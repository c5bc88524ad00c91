"""A fan-out's join in the job record: who sends the fan-in, and which send of it runs.

Against a real Redis, with the producer's own job record and no workers: each step's
outcome is recorded as a worker records it, and the replies say who sends the fan-in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from fleetline.producer.submit import Producer
from fleetline.shared.fan_in_join import FanInClaims
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import JobStatus, OutcomeStatus, SubtaskOutcome
from fleetline.shared.settings import load_settings

pytestmark = pytest.mark.integration

SPEC = {
    "kind": "research_brief",
    "tenant": "t1",
    "input": {
        "question": "What happened?",
        "documents": [{"id": "a", "text": "Acme grew."}, {"id": "b", "text": "Beta shrank."}],
    },
}


@pytest.fixture
def producer(redis_url: str) -> Iterator[Producer]:
    producer = Producer.from_settings(load_settings())
    yield producer
    producer.app.close()


def _record(producer: Producer, job_id: str, subtask_id: str) -> tuple[bool, str | None]:
    """Record one OK outcome as a worker does; (recorded now, fan-in message to send)."""
    outcome = SubtaskOutcome(
        subtask_id=subtask_id,
        worker_type="extraction",
        status=OutcomeStatus.OK,
        output={"text": subtask_id},
        cost_usd=0.001,
    )
    trip = RoundTrip(producer.store.client)
    index = producer.store.queue_record(trip, job_id, outcome, "test-worker")
    reply = trip.execute()[index]
    return producer.store.recorded(reply), producer.store.fan_in_due(reply)


def _steps(producer: Producer, job_id: str) -> list[str]:
    ids: list[str] = json.loads(producer.store.raw(job_id)["subtask_ids"])
    return ids


def test_only_the_record_that_completes_the_set_sends_the_fan_in(producer: Producer) -> None:
    job_id = producer.submit(SPEC).job_id
    steps = _steps(producer, job_id)
    assert len(steps) >= 3
    *first, last = steps
    for step in first:
        assert _record(producer, job_id, step) == (True, None)
    recorded, message = _record(producer, job_id, last)
    assert recorded
    assert message is not None
    sent = json.loads(message)
    assert sent["context"]["job_id"] == job_id
    assert sent["context"]["expected"] == len(steps)
    assert sent["queue"] == sent["context"]["then"]["worker_type"] == "synthesis"
    # A redelivered step that did not complete the set sends nothing.
    assert _record(producer, job_id, first[0]) == (False, None)


def test_a_redelivered_completer_sends_again_until_a_fan_in_claims_the_job(
    producer: Producer,
) -> None:
    job_id = producer.submit(SPEC).job_id
    steps = _steps(producer, job_id)
    for step in steps:
        _record(producer, job_id, step)
    # The completer died before its send (or its ack): its redelivery sends the fan-in.
    recorded, again = _record(producer, job_id, steps[-1])
    assert not recorded and again is not None

    claims = FanInClaims(producer.store.client)
    then_id = json.loads(again)["context"]["then"]["id"]
    first = claims.claim(job_id, "send-1", then_id)
    assert first.runs
    assert [o.subtask_id for o in first.outcomes] == steps  # in plan order
    # The other send of it runs nothing; the same send, redelivered, runs again.
    assert not claims.claim(job_id, "send-2", then_id).runs
    assert claims.claim(job_id, "send-1", then_id).runs
    # Once a fan-in has claimed the job, no redelivery sends another.
    assert _record(producer, job_id, steps[-1]) == (False, None)


def test_a_job_the_watchdog_ended_sends_no_fan_in(producer: Producer) -> None:
    job_id = producer.submit(SPEC).job_id
    steps = _steps(producer, job_id)
    for step in steps[:-1]:
        _record(producer, job_id, step)
    producer.store.finalize(job_id, JobStatus.DEGRADED, 0.5, {"partial": True}, "watchdog")
    # The late outcome is kept (and charged), but the job stays as the watchdog left it.
    assert _record(producer, job_id, steps[-1]) == (True, None)
    assert producer.store.get(job_id).status is JobStatus.DEGRADED
    assert "fan_in" not in producer.store.raw(job_id), "a final job keeps no join message"


def test_steps_are_sent_without_a_callback_and_store_no_result(producer: Producer) -> None:
    job_id = producer.submit(SPEC).job_id
    client = producer.store.client
    lists = [k for k in client.scan_iter(match="extraction*") if client.type(k) == b"list"]
    queued = [json.loads(raw) for key in lists for raw in client.lrange(key, 0, -1)]
    mine = [m for m in queued if m["headers"]["id"].startswith(job_id)]
    assert mine
    for message in mine:
        # No chord: the message carries no callback, and its task stores no result.
        assert message["headers"].get("chord") is None
    assert producer.store.raw(job_id).get("fan_in")
