"""Hostile dicts given to `Producer.submit` / `fleet.submit` are refused with the field
named, and nothing reaches Redis (against a real Redis, no workers needed)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from fleetline.examples.research import fleet
from fleetline.producer.submit import Producer
from fleetline.shared.errors import SpecError
from fleetline.shared.schemas import JobSpec
from fleetline.shared.settings import load_settings

pytestmark = pytest.mark.integration

VALID: dict[str, Any] = {
    "kind": "research_brief",
    "tenant": "t1",
    "input": {"question": "What happened?", "documents": [{"id": "a", "text": "Acme grew."}]},
}


def deep(levels: int) -> dict[str, Any]:
    """An input nesting `levels` objects under "a", built in a loop."""
    value: Any = 1
    for _ in range(levels):
        value = {"a": value}
    return {"question": "Why?", "a": value}


def on_document(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        spec["input"]["documents"][0].update(fields)

    return change


HOSTILE = [
    pytest.param(lambda s: s.update(input=deep(100_000)), "input.a.a.a", id="deep"),
    pytest.param(on_document(n=7 * 10**4999), "input.documents.0.n", id="5000-digits"),
    pytest.param(on_document(n=2**64), "input.documents.0.n", id="2**64"),
    pytest.param(on_document(n=float("nan")), "input.documents.0.n", id="nan"),
    pytest.param(on_document(n=float("-inf")), "input.documents.0.n", id="-inf"),
    pytest.param(on_document(text={"a set"}), "input.documents.0.text", id="set"),
    pytest.param(on_document(text=b"bytes"), "input.documents.0.text", id="bytes"),
    pytest.param(on_document(text="\ud800"), "input.documents.0.text", id="surrogate"),
    pytest.param(lambda s: s["input"].update({1: "x"}), "input.1", id="int-key"),
]


@pytest.fixture
def producer(redis_url: str) -> Iterator[Producer]:
    producer = Producer.from_settings(load_settings())
    yield producer
    producer.app.close()


@pytest.mark.parametrize(("change", "field"), HOSTILE)
def test_hostile_dict_is_refused_naming_the_field_and_nothing_written(
    producer: Producer,
    redis_client: redis.Redis,
    change: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    spec = copy.deepcopy(VALID)
    change(spec)

    with pytest.raises(SpecError) as info:
        producer.submit(spec)

    assert info.value.errors[0][0].startswith(field), info.value.errors
    assert field in str(info.value)
    assert redis_client.dbsize() == 0, "nothing may reach Redis for a refused spec"


def test_jobspec_with_a_deep_input_is_refused(
    producer: Producer, redis_client: redis.Redis
) -> None:
    spec = JobSpec(kind="research_brief", input=deep(100_000))

    with pytest.raises(SpecError, match="deeper than 64 levels") as info:
        producer.submit(spec)

    assert info.value.errors[0][0].startswith("input.a.a")
    assert redis_client.dbsize() == 0


def test_fleet_submit_refuses_a_deep_dict(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A producer of its own, on this test's database; the fleet's is restored after.
    monkeypatch.setattr(fleet, "_producer", None)
    spec = {**copy.deepcopy(VALID), "input": deep(100_000)}

    with pytest.raises(SpecError) as info:
        fleet.submit(spec)

    assert info.value.errors[0][0].startswith("input.a.a")
    assert redis_client.dbsize() == 0
    producer = fleet._producer
    if producer is not None:
        producer.app.close()


def test_a_valid_spec_still_goes_through(producer: Producer, redis_client: redis.Redis) -> None:
    receipt = producer.submit(copy.deepcopy(VALID))

    assert receipt.created
    assert redis_client.dbsize() > 0
