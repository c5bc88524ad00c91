"""The producer's edge and the state store, against a real Redis (no workers needed)."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import redis

from fleetline.producer.submit import Producer
from fleetline.shared import keys
from fleetline.shared.errors import ConcurrencyError, SpecError
from fleetline.shared.redis_client import make_redis
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.settings import load_settings
from fleetline.shared.state import StateStore

pytestmark = pytest.mark.integration

VALID = {
    "kind": "research_brief",
    "tenant": "t1",
    "input": {"question": "What happened?", "documents": [{"id": "a", "text": "Acme grew."}]},
}


@pytest.fixture
def producer(redis_url: str) -> Iterator[Producer]:
    settings = load_settings()
    producer = Producer.from_settings(settings)
    yield producer
    producer.app.close()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"budget_usd": -1}, "budget_usd"),
        # Found by the chaos run's fuzzer: a number given as text was taken for one.
        ({"budget_usd": "1"}, "budget_usd"),
        ({"priority": "9"}, "priority"),
        ({"kind": "nope"}, "kind"),
        ({"deadline_s": 10_000}, "deadline_s"),
        ({"input": {"question": "Why?", "documents": [{"id": "a"}]}}, "input.documents.0.text"),
        ({"input": {"question": "Why?", "documents": []}}, "input.documents"),
        ({"tenant": "bad tenant!"}, "tenant"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_bad_spec_is_refused_with_field_and_nothing_written(
    producer: Producer, redis_client: redis.Redis, change: dict[str, object], field: str
) -> None:
    spec = {**copy.deepcopy(VALID), **change}
    with pytest.raises(SpecError) as info:
        producer.submit(spec)
    assert field in str(info.value)
    assert any(path == field for path, _ in info.value.errors)
    assert redis_client.dbsize() == 0, "nothing may reach Redis for a refused spec"


def test_same_idempotency_key_yields_one_job(producer: Producer, redis_client: redis.Redis) -> None:
    first = producer.submit({**VALID, "idempotency_key": "order-42"})
    again = producer.submit({**VALID, "idempotency_key": "order-42"})
    other_tenant = producer.submit({**VALID, "tenant": "t2", "idempotency_key": "order-42"})

    assert first.created and not again.created
    assert again.job_id == first.job_id
    assert other_tenant.job_id != first.job_id, "idempotency keys are per tenant"
    jobs = [k for k in redis_client.scan_iter("fl:job:*") if k.count(b":") == 2]
    assert len(jobs) == 2
    # Exactly one copy of each subtask was enqueued for the first job.
    queued = sum(redis_client.llen(k) for k in redis_client.scan_iter(b"extraction*"))
    assert queued == 2


def test_stale_version_update_raises_and_audit_has_one_entry_per_update(
    redis_client: redis.Redis, redis_url: str
) -> None:
    settings = load_settings()
    store = StateStore(make_redis(settings), settings.limits.finished_ttl_s)
    store.create_job("j1", {"kind": "k", "tenant": "t"}, 9e9, None, "t")

    v2 = store.update("j1", 1, {"note": "a"}, actor="alice")
    with pytest.raises(ConcurrencyError, match="expected version 1, found 2"):
        store.update("j1", 1, {"note": "b"}, actor="bob")
    v3 = store.update("j1", v2, {"note": "c"}, actor="carol")

    assert store.raw("j1")["note"] == "c"
    audit = store.audit("j1")
    assert [(e.actor, e.version) for e in audit] == [("producer", 1), ("alice", 2), ("carol", 3)]
    assert [e.id for e in audit] == ["1", "2", "3"]
    assert audit[1].fields["changes"] == '{"note": "a"}' and float(audit[1].fields["at"]) > 0
    assert v3 == 3
    assert redis_client.type(keys.job_audit("j1")) == b"list"
    # A trail begun as a stream, before the list (a job of an earlier release), reads whole.
    redis_client.xadd(keys.job_audit_stream("j1"), {"actor": "old", "action": "created"})
    trail = store.audit("j1")
    assert [e.actor for e in trail] == ["old", "producer", "alice", "carol"]
    assert trail[0].id.endswith("-0") and [e.id for e in trail[1:]] == ["2", "3", "4"]


def test_a_retried_attempts_charge_is_added_to_its_job_once(
    producer: Producer, redis_client: redis.Redis
) -> None:
    job_id = producer.submit(VALID).job_id
    store = producer.store

    def charge(job: str, attempt: int) -> int:
        trip = RoundTrip(redis_client)
        index = store.queue_charge_attempt(trip, job, "extract-d0", attempt, 0.25, "w1")
        return int(trip.execute()[index])

    assert charge(job_id, 1) == 1
    assert charge(job_id, 1) == 0, "the same attempt's closing trip run again adds nothing"
    assert charge(job_id, 2) == 1
    assert store.get(job_id).cost_usd == pytest.approx(0.5)
    charged = [e for e in store.audit(job_id) if e.action == "attempt_charged"]
    assert [(e.fields["subtask"], e.fields["attempt"]) for e in charged] == [
        ("extract-d0", "1"),
        ("extract-d0", "2"),
    ]
    assert charge("no-such-job", 1) == 0
    assert not redis_client.exists(keys.job("no-such-job")), "a gone job is not made again"
