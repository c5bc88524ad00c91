"""Rolling upgrades: producers say their payload version; a running worker runs a step
of the previous version and dead-letters one newer than it knows."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from fleetline.producer.submit import parse_spec
from fleetline.shared.deadletters import DeadLetter, DeadLetterStore
from fleetline.shared.schemas import PAYLOAD_VERSION, OutcomeStatus, SubtaskPayload
from tests.integration.conftest import FleetFactory, RunningFleet

pytestmark = pytest.mark.integration

SPEC = {
    "kind": "research_brief",
    "deadline_s": 60,
    "input": {"question": "How did Acme grow?", "documents": [{"id": "d0", "text": "Acme."}]},
}


def queued_payloads(client: redis.Redis, queue: str) -> list[dict[str, Any]]:
    """The step payloads waiting on a queue (its lists, one per priority step)."""
    found = []
    for key in client.scan_iter(f"{queue}*"):
        if client.type(key) != b"list":
            continue
        for item in client.lrange(key, 0, -1):
            envelope = json.loads(item)
            args, _, _ = json.loads(base64.b64decode(envelope["body"]))
            found.append(args[0])
    return found


def wait_for_outcome(fleet: RunningFleet, job_id: str, step: str) -> Any:
    deadline = time.monotonic() + 20
    while (outcome := fleet.store.outcomes(job_id).get(step)) is None:
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.1)
    return outcome


def wait_for_letter(store: DeadLetterStore, task_id: str) -> DeadLetter:
    deadline = time.monotonic() + 20
    while not (found := [d for d in store.list() if d.task_id == task_id]):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return found[0]


def test_previous_version_runs_newer_version_is_dead_lettered(
    start_fleet: FleetFactory, redis_client: redis.Redis, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.jsonl"
    # No extraction worker: the job's extraction step stays on its queue to be looked at.
    # No cache: the step below reads the job's document, and must make its own call.
    fleet = start_fleet(
        ["classification"],
        with_beat=False,
        FLEETLINE_SIM_CALL_LOG=str(calls),
        FLEETLINE_CACHE_ENABLED="false",
    )
    receipt = fleet.producer.submit(SPEC)
    deadline = time.monotonic() + 10
    while not (queued := queued_payloads(redis_client, "extraction")):
        assert time.monotonic() < deadline, "the extraction step was never queued"
        time.sleep(0.05)
    assert [p["version"] for p in queued] == [PAYLOAD_VERSION], "producers say their version"

    # Today's payload, as a producer from before versions sent it: no `version` field.
    _, plan = parse_spec(SPEC, fleet.settings)
    classify = next(s for s in plan.subtasks if s.worker_type == "classification")
    current = SubtaskPayload(
        job_id=receipt.job_id,
        tenant="default",
        deadline_at=time.time() + 30,
        subtask=classify.model_copy(update={"id": "classify-v1"}),
        budget_usd=1.0,
    ).model_dump(mode="json")
    previous = {k: v for k, v in current.items() if k != "version"}
    fleet.producer.app.send_task("classification", args=(previous,))
    outcome = wait_for_outcome(fleet, receipt.job_id, "classify-v1")
    assert outcome.status is OutcomeStatus.OK and outcome.output, fleet.logs()
    assert "classify-v1" in calls.read_text(), "its model call was made"

    # One from a newer producer than this worker: kept whole, with the reason, not run.
    newer = {
        **current,
        "version": PAYLOAD_VERSION + 1,
        "subtask": {**current["subtask"], "id": "classify-v3"},
        "a_field_of_v3": True,
    }
    sent = fleet.producer.app.send_task("classification", args=(newer,))
    letter = wait_for_letter(DeadLetterStore(redis_client, 100), sent.id)
    assert letter.reason == "unsupported_version"
    assert f"payload version {PAYLOAD_VERSION + 1} is newer" in letter.detail
    assert letter.message["args"] == [newer]
    assert "classify-v3" not in fleet.store.outcomes(receipt.job_id)
    assert "classify-v3" not in calls.read_text()
