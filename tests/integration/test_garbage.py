"""Garbage on every queue: it is dead-lettered with its bytes, and the workers go on.

Items are pushed straight onto the queues' Redis lists (as anyone who can write to Redis
could), while normal jobs run: raw bytes that are not JSON or not UTF-8, JSON that is not
a kombu envelope, envelopes whose body does not decode or has the wrong shape, unknown
tasks, arguments that do not fit, and an `unacked` entry that is not a message.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from fleetline.shared.deadletters import DeadLetter, DeadLetterStore
from fleetline.shared.names import HOUSEKEEPING_QUEUE, TASK_REAP_DEADLINES
from fleetline.shared.schemas import JobStatus
from tests.integration.conftest import FleetFactory
from tests.integration.test_failure_handling import brief

pytestmark = pytest.mark.integration

SEP = "\x06\x16"  # kombu's separator of a queue's priority lists: `<queue>\x06\x16<step>`


@dataclass(frozen=True)
class Garbage:
    """One item pushed onto a list, and what its dead letter must say."""

    queue: str
    key: str  # the Redis list it is pushed onto
    data: bytes
    reason: str
    task_id: str = ""  # the envelope's id header, when it has one
    # Where the item's content is found again in its letter.
    recovered: Callable[[DeadLetter], bool] = lambda letter: False


def raw(letter: DeadLetter) -> bytes:
    """The bytes a letter kept: the list item, or the message body."""
    return base64.b64decode(letter.message.get("body_b64", ""))


def envelope(queue: str, body: bytes | str, headers: dict[str, Any]) -> bytes:
    """A kombu envelope as the Redis transport writes it; a str body is sent as it is."""
    encoded = body if isinstance(body, str) else base64.b64encode(body).decode()
    return json.dumps(
        {
            "body": encoded,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "correlation_id": headers.get("id", ""),
                "reply_to": "",
                "delivery_mode": 2,
                "delivery_info": {"exchange": queue, "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": f"tag-{headers.get('id', 'none')}",
            },
        }
    ).encode()


def task_headers(task: str, task_id: str | None) -> dict[str, Any]:
    headers: dict[str, Any] = {
        "lang": "py",
        "task": task,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "argsrepr": "",
        "kwargsrepr": "",
        "origin": "test_garbage",
        "ignore_result": True,
    }
    if task_id is not None:
        headers["id"] = task_id
    return headers


def body(*args: Any) -> bytes:
    return json.dumps([list(args), {}, {"callbacks": None, "chord": None}]).encode()


def garbage_for(queue: str, agent: str) -> list[Garbage]:
    """Every kind of garbage, for one queue; `agent` is a task the fleet runs."""
    task = queue if queue != HOUSEKEEPING_QUEUE else TASK_REAP_DEADLINES

    def item(key: str, data: bytes, reason: str, task_id: str = "") -> Garbage:
        def recovered(letter: DeadLetter) -> bool:
            return raw(letter) == data and bool(letter.message.get("raw_item"))

        return Garbage(queue, key, data, reason, task_id, recovered)

    def sent(kind: str, reason: str, headers_task: str, payload: bytes) -> Garbage:
        task_id = f"garbage:{queue}:{kind}"
        data = envelope(queue, payload, task_headers(headers_task, task_id))
        return Garbage(queue, queue, data, reason, task_id, lambda letter: raw(letter) == payload)

    bad_payload = {"job_id": 7, "subtask": "not a subtask", "marker": f"{queue}:bad-payload"}
    bad_b64_id = f"garbage:{queue}:bad-base64"
    no_id_body = body({"marker": f"{queue}:no-id"})
    return [
        item(queue, f"not a message {{ {queue}".encode(), "not_json"),
        item(queue, b"\xff\xfe\x80 not utf-8 " + queue.encode() + b" \xc3", "not_json"),
        item(f"{queue}{SEP}3", f"priority garbage {{ {queue}".encode(), "not_json"),
        item(queue, b"[]", "not_an_envelope"),
        item(queue, b"42", "not_an_envelope"),
        item(queue, b'{"foo": 1}', "not_an_envelope"),
        item(
            queue,
            envelope(queue, "%%%abcde", task_headers(task, bad_b64_id)),
            "undecodable",
            bad_b64_id,
        ),
        sent("body-not-json", "undecodable", task, b"\x80\x04not json"),
        sent("body-wrong-shape", "invalid_task", task, b'{"foo": 1}'),
        sent("unknown-task", "unknown_task", "fleetline.no_such_task", body({"x": 1})),
        sent("wrong-arity", "invalid_task", task, body(1, 2, 3)),
        Garbage(
            queue,
            queue,
            envelope(queue, no_id_body, task_headers(task, None)),
            "invalid_task",
            "",
            lambda letter: raw(letter) == no_id_body,
        ),
        Garbage(
            queue,
            queue,
            envelope(queue, body(bad_payload), task_headers(agent, f"garbage:{queue}:payload")),
            "invalid_payload",
            f"garbage:{queue}:payload",
            lambda letter: letter.message.get("args") == [bad_payload],
        ),
    ]


def wait_for_count(store: DeadLetterStore, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while store.count() < count and time.monotonic() < deadline:
        time.sleep(0.1)


def test_garbage_on_every_queue_is_dead_lettered_and_workers_keep_serving(
    start_fleet: FleetFactory, redis_client: redis.Redis
) -> None:
    fleet = start_fleet(
        FLEETLINE_CELERY_UNACKED_RESTORE_INTERVAL_S="1",
        FLEETLINE_CELERY_UNACKED_RESTORE_THROTTLE="1",
    )
    agents = fleet.worker_types
    queues = [*agents, HOUSEKEEPING_QUEUE]
    items = [g for queue in queues for g in garbage_for(queue, agents[0])]

    before = [fleet.producer.submit(brief(2, deadline_s=40)) for _ in range(2)]
    for g in items:
        redis_client.lpush(g.key, g.data)
    # An entry of kombu's unacked hash that is not [envelope, exchange, routing key],
    # old enough for the next restore scan of every worker.
    redis_client.hset("unacked", "garbage-tag", b"\xffnot an unacked entry")
    redis_client.zadd("unacked_index", {"garbage-tag": 0})
    after = [fleet.producer.submit(brief(2, deadline_s=40)) for _ in range(2)]

    for receipt in [*before, *after]:
        assert fleet.wait(receipt.job_id).status is JobStatus.SUCCEEDED, fleet.logs()

    store = DeadLetterStore(redis_client, 1000)
    expected = len(items) + 1
    wait_for_count(store, expected, timeout_s=20)
    time.sleep(1.5)  # a second letter for any item would show up by now
    letters = store.list(limit=1000)
    assert len(letters) == expected, (
        sorted((letter.queue, letter.reason, letter.detail[:80]) for letter in letters),
        fleet.logs(),
    )

    unacked = [letter for letter in letters if "unacked entry" in letter.detail]
    assert len(unacked) == 1 and unacked[0].reason == "not_json"
    assert raw(unacked[0]) == b"\xffnot an unacked entry"
    assert not redis_client.hexists("unacked", "garbage-tag")

    unmatched = [letter for letter in letters if letter not in unacked]
    for g in items:
        found = [
            letter
            for letter in unmatched
            if letter.queue == g.queue
            and (not g.task_id or letter.task_id == g.task_id)
            and g.recovered(letter)
        ]
        assert len(found) == 1, (g, [(x.reason, x.queue, x.task_id) for x in unmatched])
        letter = found[0]
        assert letter.reason == g.reason, (g, letter)
        assert letter.detail, letter
        unmatched.remove(letter)
    assert not unmatched

    assert all(fleet.fleet.alive().values()), (fleet.fleet.alive(), fleet.logs())
    assert fleet.fleet.restarts == {}, fleet.logs()
    for queue in queues:
        assert redis_client.llen(queue) == 0
        assert redis_client.llen(f"{queue}{SEP}3") == 0

    # Still serving once the garbage is gone.
    receipt = fleet.producer.submit(brief(1, deadline_s=30))
    assert fleet.wait(receipt.job_id).status is JobStatus.SUCCEEDED, fleet.logs()
