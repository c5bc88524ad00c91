"""The typed boundary: what a job spec may hold, which statuses are final, outcome shape."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from fleetline.shared.schemas import (
    JobSpec,
    JobStatus,
    OutcomeStatus,
    StepKind,
    SubtaskOutcome,
    SubtaskPayload,
    SubtaskSpec,
)

INPUT: dict[str, Any] = {"question": "why?", "documents": [{"id": "a", "text": "b"}]}


def _spec(**fields: Any) -> JobSpec:
    return JobSpec.model_validate({"kind": "research_brief", "input": INPUT, **fields})


def _bad_fields(**fields: Any) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as info:
        _spec(**fields)
    return [e["loc"] for e in info.value.errors()]


def test_minimal_spec_gets_the_documented_defaults() -> None:
    spec = _spec()
    assert spec.tenant == "default"
    assert spec.priority == 5
    assert spec.deadline_s is None
    assert spec.latency_profile is None
    assert spec.idempotency_key is None
    assert spec.budget_usd > 0
    assert spec.max_tokens > 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", ""),
        ("kind", "Research"),
        ("kind", "1brief"),
        ("kind", "research-brief"),
        ("kind", "k" * 65),
        ("tenant", ""),
        ("tenant", "acme corp"),
        ("tenant", "t" * 65),
        ("budget_usd", 0),
        ("budget_usd", -1),
        ("budget_usd", 10_000.01),
        ("max_tokens", 0),
        ("max_tokens", 100_000_001),
        ("deadline_s", 0),
        ("deadline_s", -5),
        ("latency_profile", "p" * 65),
        ("idempotency_key", ""),
        ("idempotency_key", "k" * 201),
        ("priority", -1),
        ("priority", 10),
    ],
)
def test_out_of_bounds_values_are_refused(field: str, value: Any) -> None:
    assert _bad_fields(**{field: value}) == [(field,)]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kind", "a"),
        ("kind", "k" * 64),
        ("tenant", "acme-corp.eu_1"),
        ("budget_usd", 10_000),
        ("budget_usd", 0.0001),
        ("max_tokens", 100_000_000),
        ("deadline_s", 0.5),
        ("idempotency_key", "k" * 200),
        ("priority", 0),
        ("priority", 9),
    ],
)
def test_values_at_the_bounds_are_accepted(field: str, value: Any) -> None:
    assert getattr(_spec(**{field: value}), field) == value


def test_kind_and_input_are_required() -> None:
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate({})
    assert sorted(e["loc"] for e in info.value.errors()) == [("input",), ("kind",)]


def test_unknown_fields_are_forbidden() -> None:
    assert _bad_fields(budget=5) == [("budget",)]


def test_spec_is_frozen() -> None:
    spec = _spec()
    with pytest.raises(ValidationError):
        spec.priority = 1  # type: ignore[misc]
    assert spec.priority == 5


# Only a job still queued or running may change; every other status is final.
TERMINAL: dict[JobStatus, bool] = {
    JobStatus.PENDING: False,
    JobStatus.RUNNING: False,
    JobStatus.SUCCEEDED: True,
    JobStatus.DEGRADED: True,
    JobStatus.FAILED: True,
    JobStatus.TIMED_OUT: True,
    JobStatus.KILLED: True,
    JobStatus.CANCELLED: True,
}


@pytest.mark.parametrize(("status", "terminal"), list(TERMINAL.items()))
def test_terminal_statuses(status: JobStatus, terminal: bool) -> None:
    assert status.terminal is terminal


def test_every_job_status_is_classified() -> None:
    # A new status needs a decision in TERMINAL before it ships.
    assert set(TERMINAL) == set(JobStatus)


def test_outcome_defaults_are_an_uncharged_first_attempt() -> None:
    outcome = SubtaskOutcome(
        subtask_id="extract-a", worker_type="extraction", status=OutcomeStatus.OK
    )
    assert (outcome.tokens_in, outcome.tokens_out, outcome.cost_usd) == (0, 0, 0.0)
    assert outcome.attempts == 1
    assert outcome.error is None
    assert outcome.output is None
    assert not outcome.cached
    assert not outcome.critical


def test_outcome_survives_the_json_wire() -> None:
    outcome = SubtaskOutcome.model_validate(
        {
            "subtask_id": "analyse-0",
            "worker_type": "analysis",
            "status": "invalid_output",
            "error": {"category": "invalid_output", "message": "findings: Field required"},
            "model": "sim-large",
            "tokens_in": 120,
            "tokens_out": 30,
            "cost_usd": 0.0008,
            "attempts": 2,
            "output": None,
        }
    )
    back = SubtaskOutcome.model_validate_json(outcome.model_dump_json())
    assert back == outcome
    assert back.status is OutcomeStatus.INVALID_OUTPUT
    assert back.worker_type == "analysis"


def test_outcome_refuses_unknown_status_and_extra_fields() -> None:
    base = {"subtask_id": "x", "worker_type": "extraction", "status": "ok"}
    with pytest.raises(ValidationError) as info:
        SubtaskOutcome.model_validate({**base, "status": "done"})
    assert [e["loc"] for e in info.value.errors()] == [("status",)]
    with pytest.raises(ValidationError) as info:
        SubtaskOutcome.model_validate({**base, "surprise": 1})
    assert [e["loc"] for e in info.value.errors()] == [("surprise",)]


def test_payload_survives_the_json_wire() -> None:
    payload = SubtaskPayload(
        job_id="j1",
        tenant="acme",
        deadline_at=1_700_000_000.25,
        subtask=SubtaskSpec(
            id="extract-a",
            worker_type="extraction",
            tier="cheap",
            instruction="why?",
            text="doc",
            max_output_tokens=400,
        ),
    )
    assert SubtaskPayload.model_validate_json(payload.model_dump_json()) == payload


def test_subtask_output_limit_must_be_positive() -> None:
    with pytest.raises(ValidationError) as info:
        SubtaskSpec(
            id="x",
            worker_type="extraction",
            tier="cheap",
            instruction="q",
            text="t",
            max_output_tokens=0,
        )
    assert [e["loc"] for e in info.value.errors()] == [("max_output_tokens",)]


@pytest.mark.parametrize(
    "name", ["Extraction", "fleetline.fan_in", "1st", "", "a" * 49, "with-dash", "with space"]
)
def test_subtask_worker_type_must_be_an_agent_or_tool_name(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        SubtaskSpec(id="x", worker_type=name)
    assert [e["loc"] for e in info.value.errors()] == [("worker_type",)]


def test_an_agent_step_is_the_default_kind() -> None:
    spec = SubtaskSpec(id="extract-a", worker_type="extraction", tier="cheap", instruction="q")
    assert spec.kind is StepKind.AGENT
    assert spec.args is None
    assert not spec.critical


def test_a_tool_step_carries_its_arguments_over_the_wire() -> None:
    spec = SubtaskSpec(
        id="lookup-1",
        worker_type="lookup",
        kind=StepKind.TOOL,
        args={"ticker": "ACME", "years": [2022, 2023], "deep": {"ok": True}},
        critical=True,
    )
    back = SubtaskSpec.model_validate_json(spec.model_dump_json())
    assert back == spec
    assert back.kind is StepKind.TOOL
    assert back.tier is None
    assert back.args == {"ticker": "ACME", "years": [2022, 2023], "deep": {"ok": True}}
