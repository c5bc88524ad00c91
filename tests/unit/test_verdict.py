"""How a job ends from its outcomes: its status, completeness and the structured result."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from fleetline.examples import research
from fleetline.shared.fleet import FleetDefinition
from fleetline.shared.schemas import JobStatus, OutcomeStatus, SubtaskOutcome
from fleetline.shared.verdict import (
    assemble,
    judge,
    listed_outputs,
    outputs_by_step,
    usable,
)
from fleetline.workers.fan_in import combined_text, parse_outcomes

OK = OutcomeStatus.OK


class Model(BaseModel):
    x: int = 0


def _outcome(
    sid: str,
    status: OutcomeStatus = OK,
    output: dict[str, Any] | None = None,
    worker_type: str | None = None,
    critical: bool = False,
) -> SubtaskOutcome:
    if worker_type is None:
        prefix = sid.split("-", 1)[0]
        worker_type = {
            "extract": "extraction",
            "classify": "classification",
            "analyse": "analysis",
            "lookup": "lookup",
        }[prefix]
    return SubtaskOutcome(
        subtask_id=sid, worker_type=worker_type, status=status, output=output, critical=critical
    )


def _extract(sid: str, entities: list[str], figures: list[str], gist: str) -> SubtaskOutcome:
    return _outcome(sid, output={"entities": entities, "figures": figures, "gist": gist})


# --- judge -------------------------------------------------------------------------------


def test_every_subtask_usable_succeeds() -> None:
    outcomes = [_outcome(f"extract-{i}") for i in range(3)]
    assert judge(outcomes, 3) == (JobStatus.SUCCEEDED, 1.0)


@pytest.mark.parametrize(
    "bad",
    [
        OutcomeStatus.FAILED,
        OutcomeStatus.TIMED_OUT,
        OutcomeStatus.SKIPPED,
        OutcomeStatus.INVALID_OUTPUT,
        OutcomeStatus.CIRCUIT_OPEN,
        OutcomeStatus.BUDGET_EXCEEDED,
        OutcomeStatus.KILLED,
    ],
)
def test_a_failed_subtask_degrades_the_job(bad: OutcomeStatus) -> None:
    outcomes = [_outcome("extract-0"), _outcome("extract-1"), _outcome("extract-2", bad)]
    status, completeness = judge(outcomes, 3)
    assert status is JobStatus.DEGRADED
    assert completeness == pytest.approx(2 / 3, abs=1e-4)


def test_a_missing_subtask_degrades_the_job() -> None:
    status, completeness = judge([_outcome("extract-0"), _outcome("extract-1")], 4)
    assert (status, completeness) == (JobStatus.DEGRADED, 0.5)


def test_nothing_usable_fails_the_job() -> None:
    outcomes = [
        _outcome("extract-0", OutcomeStatus.FAILED),
        _outcome("extract-1", OutcomeStatus.TIMED_OUT),
    ]
    assert judge(outcomes, 2) == (JobStatus.FAILED, 0.0)


def test_no_outcomes_at_all_fails_the_job() -> None:
    assert judge([], 5) == (JobStatus.FAILED, 0.0)
    assert judge([], 0) == (JobStatus.FAILED, 0.0)


def test_a_failed_critical_subtask_fails_the_job_however_much_else_worked() -> None:
    outcomes = [_outcome(f"extract-{i}") for i in range(9)]
    outcomes.append(_outcome("analyse-0", OutcomeStatus.TIMED_OUT, critical=True))
    status, completeness = judge(outcomes, 10)
    assert status is JobStatus.FAILED
    assert completeness == 0.9


def test_a_critical_subtask_that_worked_does_not_fail_the_job() -> None:
    outcomes = [_outcome("analyse-0", critical=True), _outcome("extract-0")]
    assert judge(outcomes, 2) == (JobStatus.SUCCEEDED, 1.0)


def test_a_job_whose_every_subtask_was_killed_is_killed() -> None:
    killed = [_outcome(f"extract-{i}", OutcomeStatus.KILLED) for i in range(3)]
    assert judge(killed, 3) == (JobStatus.KILLED, 0.0)
    # One that failed for another reason makes it a plain failure.
    mixed = [*killed[:2], _outcome("extract-2", OutcomeStatus.FAILED)]
    assert judge(mixed, 3) == (JobStatus.FAILED, 0.0)


def test_judge_accepts_any_iterable() -> None:
    assert judge((o for o in [_outcome("extract-0")]), 2) == (JobStatus.DEGRADED, 0.5)


# --- assemble: the default result ----------------------------------------------------


def test_by_default_the_result_is_each_usable_output_by_step() -> None:
    outcomes = [
        _outcome("lookup-a", output={"price": 12.5}),
        _outcome("lookup-b", OutcomeStatus.FAILED, output={"price": 99}),
        _outcome("extract-a", output={"gist": "g"}),
    ]
    result = assemble(outcomes, ["lookup-a", "lookup-b", "extract-a", "extract-b"])
    assert result == {
        "outputs": {"lookup-a": {"price": 12.5}, "extract-a": {"gist": "g"}},
        "missing": ["extract-b"],
        "unusable": ["lookup-b"],
    }


def test_the_default_result_of_nothing_is_empty() -> None:
    assert assemble([], []) == {"outputs": {}, "missing": [], "unusable": []}
    assert assemble([], ["a", "b"]) == {"outputs": {}, "missing": ["a", "b"], "unusable": []}


def test_assemble_lists_missing_and_unusable_subtasks_in_expected_order() -> None:
    outcomes = [
        _extract("extract-b", ["Globex"], [], "g"),
        _outcome("classify-a", OutcomeStatus.INVALID_OUTPUT),
        _outcome("extract-a", OutcomeStatus.FAILED),
    ]
    expected = ["extract-a", "extract-b", "classify-a", "classify-b", "analyse-0"]
    result = assemble(outcomes, expected)
    assert result["missing"] == ["classify-b", "analyse-0"]
    assert result["unusable"] == ["extract-a", "classify-a"]


def test_without_expected_ids_unusable_follows_the_outcomes() -> None:
    outcomes = [
        _outcome("extract-b", OutcomeStatus.TIMED_OUT),
        _outcome("extract-a"),
        _outcome("classify-a", OutcomeStatus.SKIPPED),
    ]
    result = assemble(outcomes, [])
    assert result["missing"] == []
    assert result["unusable"] == ["extract-b", "classify-a"]


def test_a_job_kinds_collect_replaces_the_default_outputs() -> None:
    seen: list[list[str]] = []

    def collect(outcomes: list[SubtaskOutcome]) -> dict[str, Any]:
        seen.append([o.subtask_id for o in outcomes])
        return {"count": len(usable(outcomes))}

    outcomes = [_outcome("lookup-a", output={}), _outcome("lookup-b", OutcomeStatus.FAILED)]
    result = assemble(outcomes, ["lookup-a", "lookup-b", "lookup-c"], collect=collect)
    # collect sees every outcome (usable or not) once; missing and unusable are added.
    assert seen == [["lookup-a", "lookup-b"]]
    assert result == {"count": 1, "missing": ["lookup-c"], "unusable": ["lookup-b"]}


def test_usable_means_ok_with_an_output() -> None:
    outcomes = [
        _outcome("lookup-a", output={"x": 1}),
        _outcome("lookup-b"),
        _outcome("lookup-c", OutcomeStatus.INVALID_OUTPUT, output={"x": 2}),
    ]
    assert [o.subtask_id for o in usable(outcomes)] == ["lookup-a"]
    assert outputs_by_step(outcomes) == {"outputs": {"lookup-a": {"x": 1}}}


def test_listed_outputs_is_one_json_line_per_usable_output() -> None:
    outcomes = [
        _outcome("lookup-a", output={"b": 2, "a": "Zürich"}),
        _outcome("lookup-b", OutcomeStatus.FAILED, output={"no": True}),
        _outcome("lookup-c", output={"n": [1, 2]}),
    ]
    lines = listed_outputs(outcomes).splitlines()
    assert lines == ['[lookup-a] {"a": "Zürich", "b": 2}', '[lookup-c] {"n": [1, 2]}']
    assert json.loads(lines[1].split(" ", 1)[1]) == {"n": [1, 2]}
    assert listed_outputs([]) == ""


# --- assemble with the example's collect -------------------------------------------------


def test_assemble_collects_each_agents_findings() -> None:
    outcomes = [
        _extract("extract-a", ["Acme", "Jane Smith"], ["$4.2 million"], "Acme grew."),
        _extract("extract-b", ["Acme", "Globex"], ["$4.2 million", "12%"], "Globex shrank."),
        _outcome("classify-a", output={"label": "finance", "confidence": 0.9, "keywords": []}),
        _outcome("analyse-0", output={"findings": ["Acme grew 12%.", "Globex shrank."]}),
    ]
    result = assemble(outcomes, [o.subtask_id for o in outcomes], research.collect)
    assert result["entities"] == ["Acme", "Jane Smith", "Globex"]
    assert result["figures"] == ["$4.2 million", "12%"]
    assert result["labels"] == {"classify-a": "finance"}
    assert result["findings"] == ["Acme grew 12%.", "Globex shrank."]
    assert result["missing"] == []
    assert result["unusable"] == []
    assert "outputs" not in result


def test_assemble_keeps_output_of_unusable_subtasks_out() -> None:
    # A failed outcome's output never reaches the result, even if one was attached.
    outcomes = [
        _outcome(
            "extract-a",
            OutcomeStatus.INVALID_OUTPUT,
            output={"entities": ["Wrong Co"], "figures": ["99%"], "gist": "x"},
        ),
        _outcome("classify-a", OutcomeStatus.FAILED, output={"label": "health"}),
        _outcome("analyse-0", OutcomeStatus.SKIPPED, output={"findings": ["stale"]}),
    ]
    result = assemble(outcomes, ["extract-a", "classify-a", "analyse-0"], research.collect)
    assert (result["entities"], result["figures"], result["labels"], result["findings"]) == (
        [],
        [],
        {},
        [],
    )
    assert result["unusable"] == ["extract-a", "classify-a", "analyse-0"]


def test_assemble_caps_long_lists() -> None:
    outcomes = [
        _extract(f"extract-{i}", [f"Entity {i}-{j}" for j in range(10)], [], "g") for i in range(8)
    ]
    result = assemble(outcomes, [], research.collect)
    assert len(result["entities"]) == 50
    assert result["entities"][:10] == [f"Entity 0-{j}" for j in range(10)]


# --- the fan-in: what the then-step reads ------------------------------------------------


def test_the_then_steps_text_is_the_kinds_combine() -> None:
    outcomes = [
        _extract("extract-a", ["Acme"], [], "Acme grew."),
        _outcome("analyse-0", output={"findings": ["[a] Revenue rose."]}),
    ]
    text = combined_text(research.fleet, "research_brief", outcomes)
    assert text == research.findings_text(outcomes) == "Acme grew.\nRevenue rose."


def test_without_a_combine_the_then_step_reads_each_usable_output() -> None:
    fleet = FleetDefinition("plain")

    @fleet.job("plain_job", input=Model)
    def plain_job(inp: Model) -> Any:
        raise AssertionError("not planned here")

    outcomes = [_outcome("lookup-a", output={"x": 1}), _outcome("lookup-b", OutcomeStatus.FAILED)]
    assert combined_text(fleet, "plain_job", outcomes) == '[lookup-a] {"x": 1}'
    # A kind the fleet does not know (an old message) gets the default too.
    assert combined_text(fleet, "gone", outcomes) == listed_outputs(outcomes)


def test_chord_results_that_are_not_outcomes_are_left_out() -> None:
    good = _outcome("extract-a", output={"gist": "g"})
    results = [good.model_dump(mode="json"), {"status": "failed", "error": "bad payload"}, None]
    assert parse_outcomes(results) == [good]
