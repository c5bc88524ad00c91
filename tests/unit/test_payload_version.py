"""Step payload versions: a worker runs its own and the previous one, refuses newer ones."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from fleetline.shared.schemas import (
    OLDEST_PAYLOAD_VERSION,
    PAYLOAD_VERSION,
    PayloadVersionError,
    SubtaskPayload,
    SubtaskSpec,
    parse_payload,
)


def wire() -> dict[str, Any]:
    """A current payload as it travels."""
    spec = SubtaskSpec(id="extract-d0", worker_type="extraction", tier="cheap", text="Acme.")
    payload = SubtaskPayload(job_id="j1", tenant="t1", deadline_at=1e10, subtask=spec)
    return payload.model_dump(mode="json")


def test_a_payload_built_in_code_is_of_the_current_version() -> None:
    raw = wire()
    assert raw["version"] == PAYLOAD_VERSION == 2
    assert parse_payload(raw) == SubtaskPayload.model_validate(raw)


def test_a_payload_without_a_version_is_version_1_and_reads_as_it_always_did() -> None:
    raw = wire()
    del raw["version"]  # as producers sent it before the field
    payload = parse_payload(raw)
    assert OLDEST_PAYLOAD_VERSION == 1
    assert payload == parse_payload({**raw, "version": 1})
    # Every field as it came; held (and sent on, by a retry) as the current version.
    assert payload.model_dump(mode="json") == {**raw, "version": PAYLOAD_VERSION}


def test_a_newer_version_is_refused_by_name_even_with_fields_this_worker_lacks() -> None:
    newer = {**wire(), "version": PAYLOAD_VERSION + 1, "a_field_of_v3": {"x": 1}}
    with pytest.raises(PayloadVersionError) as raised:
        parse_payload(newer)
    assert raised.value.version == PAYLOAD_VERSION + 1
    assert str(raised.value).startswith("payload version 3 is newer than this worker's 2")
    # Nor does the model itself take it, should anything validate it directly.
    with pytest.raises(ValidationError):
        SubtaskPayload.model_validate({**wire(), "version": PAYLOAD_VERSION + 1})


@pytest.mark.parametrize("version", [0, -1, "2", "3", True, 2.0, None])
def test_a_version_that_is_not_a_known_integer_is_an_invalid_payload(version: object) -> None:
    with pytest.raises(ValidationError) as raised:
        parse_payload({**wire(), "version": version})
    assert not isinstance(raised.value, PayloadVersionError)


@pytest.mark.parametrize("raw", [None, [], "payload", 7])
def test_what_is_not_an_object_is_an_invalid_payload(raw: object) -> None:
    with pytest.raises(ValidationError):
        parse_payload(raw)


def test_parsing_leaves_the_message_as_it_came() -> None:
    raw = wire()
    del raw["version"]
    before = dict(raw)
    parse_payload(raw)
    assert raw == before, "the dead-letter path stores the arguments as they came"
