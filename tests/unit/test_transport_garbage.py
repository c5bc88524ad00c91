"""What the transport and the consumer make of garbage, without Redis or workers."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from celery import Celery

from fleetline.shared.deadletters import MAX_RAW_BYTES, raw_item
from fleetline.shared.transport import Channel
from fleetline.workers.consumer import message_problem


def bare_channel() -> Channel:
    """A channel with no connection: enough for the checks, which touch no Redis."""
    return object.__new__(Channel)


def envelope(**change: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "body": base64.b64encode(b'[[{"x": 1}], {}, {}]').decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"task": "extraction", "id": "t1"},
        "properties": {
            "delivery_info": {"exchange": "extraction", "routing_key": "extraction"},
            "body_encoding": "base64",
            "delivery_tag": "tag-1",
        },
    }
    message.update(change)
    return message


def test_a_kombu_envelope_passes() -> None:
    assert bare_channel().envelope_problem(envelope()) is None


@pytest.mark.parametrize(
    ("payload", "reason", "words"),
    [
        ([], "not_an_envelope", "JSON list"),
        (42, "not_an_envelope", "JSON int"),
        ({"foo": 1}, "not_an_envelope", "properties"),
        (envelope(properties={"delivery_tag": "t"}), "not_an_envelope", "delivery_info"),
        (envelope(properties={"delivery_info": {}}), "not_an_envelope", "delivery_tag"),
        (envelope(headers=None), "not_an_envelope", "headers"),
        (envelope(body="%%%abcde"), "undecodable", "base64"),
    ],
)
def test_what_is_not_an_envelope_says_why(payload: Any, reason: str, words: str) -> None:
    problem = bare_channel().envelope_problem(payload)
    assert problem is not None and problem[0] == reason and words in problem[1], problem


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (b"\xffnot json", "not_json"),
        (b'{"a": 1}', "not_an_envelope"),
        (json.dumps([42, "ex", "rk"]).encode(), "not_an_envelope"),
        (json.dumps([envelope(), "ex"]).encode(), "not_an_envelope"),
    ],
)
def test_unacked_entries_that_are_not_messages(entry: bytes, reason: str) -> None:
    problem = bare_channel().unacked_problem(entry)
    assert problem is not None and problem[0] == reason, problem


def test_a_good_unacked_entry_passes() -> None:
    entry = json.dumps([envelope(), "extraction", "extraction"]).encode()
    assert bare_channel().unacked_problem(entry) is None


def test_payload_delivers_envelopes_and_dead_letters_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    channel = bare_channel()
    stored: list[tuple[Any, ...]] = []
    monkeypatch.setattr(channel, "_dead_letter_item", lambda *args: stored.append(args))
    good = json.dumps(envelope()).encode()

    assert channel._payload(good, "extraction", "extraction") == envelope()
    assert channel._payload(b"not a message {", "extraction", "extraction\x06\x163") is None
    assert channel._payload(b"[]", "extraction", "extraction") is None
    bad_body = json.dumps(envelope(body="%%%abcde")).encode()
    assert channel._payload(bad_body, "extraction", "extraction") is None

    items = [(item, queue, reason) for item, queue, reason, _, _ in stored]
    assert items == [
        (b"not a message {", "extraction", "not_json"),
        (b"[]", "extraction", "not_an_envelope"),
        (bad_body, "extraction", "undecodable"),
    ]
    assert "extraction\\x06\\x163" in stored[0][3], "the priority list is named"
    assert stored[2][4]["id"] == "t1", "an envelope's headers name the task"


def test_dead_lettering_an_item_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    channel = bare_channel()

    def no_redis() -> Any:
        raise ConnectionError("Redis is away")

    monkeypatch.setattr(channel, "conn_or_acquire", no_redis)
    channel._dead_letter_item(b"garbage", "extraction", "not_json", "detail", {})


def test_a_raw_item_keeps_its_bytes_within_bounds() -> None:
    small = raw_item(b"\xff garbage")
    assert base64.b64decode(small["body_b64"]) == b"\xff garbage"
    assert small["raw_item"] and small["size"] == 9 and not small["truncated"]
    big = raw_item(b"x" * (MAX_RAW_BYTES + 5))
    assert len(base64.b64decode(big["body_b64"])) == MAX_RAW_BYTES
    assert big["truncated"] and big["size"] == MAX_RAW_BYTES + 5


@pytest.fixture(scope="module")
def task() -> Any:
    app = Celery("garbage-test")

    @app.task(name="step", bind=True)
    def step(self: Any, payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    return step


@pytest.mark.parametrize(
    ("headers", "body", "words"),
    [
        ({}, [[{}], {}, {}], "task id"),
        ({"id": "t", "retries": "x"}, [[{}], {}, {}], "retries"),
        ({"id": "t", "timelimit": "x"}, [[{}], {}, {}], "timelimit"),
        ({"id": "t"}, {"foo": 1}, "not [args, kwargs, embed]"),
        ({"id": "t"}, 42, "not [args, kwargs, embed]"),
        ({"id": "t"}, [[{}], {}, 7], "embed"),
        ({"id": "t"}, ["x", {}, {}], "args"),
        ({"id": "t"}, [[], [], {}], "kwargs"),
        ({"id": "t"}, [[], {}, {}], "do not fit step"),
        ({"id": "t"}, [[1, 2], {}, {}], "do not fit step"),
        ({"id": "t"}, {"args": [], "kwargs": {"nope": 1}}, "do not fit step"),
    ],
)
def test_messages_a_task_cannot_run_say_why(
    task: Any, headers: dict[str, Any], body: Any, words: str
) -> None:
    problem = message_problem(task, headers, body)
    assert problem is not None and words in problem, problem


@pytest.mark.parametrize(
    "body", [[[{"x": 1}], {}, {"chord": None}], {"args": [{"x": 1}], "kwargs": {}}]
)
def test_messages_a_task_can_run_pass(task: Any, body: Any) -> None:
    headers = {"id": "t", "retries": 0, "timelimit": [None, 5]}
    assert message_problem(task, headers, body) is None
