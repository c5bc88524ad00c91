"""`fleetline tenant purge`: after a tenant's jobs ran on real workers, nothing in Redis
names the tenant or one of its jobs, and another tenant's data is untouched."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from fleetline.producer.api_keys import ApiKeys
from fleetline.producer.cli import app as cli
from fleetline.producer.submit import parse_spec
from fleetline.shared.deadletters import DeadLetterStore
from fleetline.shared.schemas import PAYLOAD_VERSION, JobStatus, SubtaskPayload
from fleetline.shared.settings import get_settings
from tests.integration.conftest import FleetFactory, RunningFleet
from tests.integration.test_cost_control import brief

pytestmark = pytest.mark.integration

# Names that appear nowhere else: a document or a model output never contains them.
GONE, KEPT = "tenant-qzx", "tenant-kvw"


def contents(client: redis.Redis, key: bytes) -> bytes:
    """Everything a key holds, as one byte string to search."""
    kind = client.type(key).decode()
    if kind == "string":
        return client.get(key) or b""
    if kind == "hash":
        return b" ".join(k + b"=" + v for k, v in client.hgetall(key).items())
    if kind == "list":
        return b" ".join(client.lrange(key, 0, -1))
    if kind == "set":
        return b" ".join(client.smembers(key))
    if kind == "zset":
        return b" ".join(client.zrange(key, 0, -1))
    if kind == "stream":
        return b" ".join(
            k + b"=" + v for _, fields in client.xrange(key) for k, v in fields.items()
        )
    return b""


def mentions(client: redis.Redis, needles: list[str]) -> list[str]:
    """Every key whose name or content mentions one of the needles."""
    found = []
    for key in client.scan_iter(count=1000):
        blob = key + b" " + contents(client, key)
        found += [f"{key.decode()} ~ {n}" for n in needles if n.encode() in blob]
    return found


def dead_letter(fleet: RunningFleet, job_id: str, tenant: str) -> str:
    """A real dead letter: a step from a newer producer than the workers know."""
    _, plan = parse_spec(brief(1, tenant=tenant), fleet.settings)
    step = plan.subtasks[0]
    payload = SubtaskPayload(
        job_id=job_id, tenant=tenant, deadline_at=time.time() + 30, subtask=step, budget_usd=1.0
    ).model_dump(mode="json")
    sent = fleet.producer.app.send_task(
        step.worker_type, args=({**payload, "version": PAYLOAD_VERSION + 1},)
    )
    return str(sent.id)


def purge(tenant: str) -> Any:
    get_settings.cache_clear()
    return CliRunner().invoke(cli, ["tenant", "purge", tenant, "--yes", "--json"])


def test_purge_leaves_nothing_of_the_tenant_and_all_of_the_others(
    start_fleet: FleetFactory, redis_client: redis.Redis
) -> None:
    fleet = start_fleet(with_beat=False, FLEETLINE_SIM_LATENCY_MS="400")
    api_keys = ApiKeys(redis_client)
    gone_key, _ = api_keys.create(GONE, "ci")
    kept_key, _ = api_keys.create(KEPT, "ci")

    first = fleet.producer.submit(brief(2, tenant=GONE, idempotency_key="order-1")).job_id
    busy = purge(GONE)
    assert busy.exit_code == 2, busy.output
    assert "unfinished job" in busy.stderr
    assert fleet.store.get(first).status is JobStatus.RUNNING, "a refused purge deletes nothing"
    assert api_keys.lookup(gone_key) is not None

    second = fleet.producer.submit(brief(2, tenant=GONE)).job_id
    other = fleet.producer.submit(brief(2, tenant=KEPT)).job_id
    for job_id in (first, second, other):
        assert fleet.wait(job_id).status is JobStatus.SUCCEEDED, fleet.logs()
    letters = DeadLetterStore(redis_client, 100)
    gone_letter, kept_letter = dead_letter(fleet, first, GONE), dead_letter(fleet, other, KEPT)
    sent = {gone_letter, kept_letter}
    deadline = time.monotonic() + 20
    while not sent <= {d.task_id for d in letters.list()}:
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.1)
    assert mentions(redis_client, [GONE, first, second]), "the tenant left records to purge"
    kept_before = set(mentions(redis_client, [KEPT, other]))

    done = purge(GONE)
    assert done.exit_code == 0, done.output
    removed = json.loads(done.stdout)["removed"]
    assert removed["jobs"] == 2 and removed["audit_trails"] == 2
    assert removed["keys"] == 1 and removed["dead_letters"] == 1
    assert removed["idempotency_keys"] == 1
    assert removed["cache_entries"] >= 1 and removed["spend_records"] >= 1

    assert mentions(redis_client, [GONE, first, second]) == []
    assert api_keys.lookup(gone_key) is None
    assert api_keys.lookup(kept_key) is not None
    assert fleet.store.get(other).status is JobStatus.SUCCEEDED
    assert [d.task_id for d in letters.list()] == [kept_letter]
    assert set(mentions(redis_client, [KEPT, other])) == kept_before, "the other tenant's all kept"

    again = purge(GONE)
    assert again.exit_code == 0
    assert set(json.loads(again.stdout)["removed"].values()) == {0}
