"""How a job ends from its outcomes: its status, completeness and the structured result."""

from __future__ import annotations

from typing import Any

import pytest

from fleetline.shared.names import WorkerType
from fleetline.shared.schemas import JobStatus, OutcomeStatus, SubtaskOutcome
from fleetline.workers.verdict import assemble, findings_text, judge

OK = OutcomeStatus.OK


def _outcome(
    sid: str,
    status: OutcomeStatus = OK,
    output: dict[str, Any] | None = None,
    worker_type: WorkerType | None = None,
    critical: bool = False,
) -> SubtaskOutcome:
    if worker_type is None:
        prefix = sid.split("-", 1)[0]
        worker_type = {
            "extract": WorkerType.EXTRACTION,
            "classify": WorkerType.CLASSIFICATION,
            "analyse": WorkerType.ANALYSIS,
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


def test_judge_accepts_any_iterable() -> None:
    assert judge((o for o in [_outcome("extract-0")]), 2) == (JobStatus.DEGRADED, 0.5)


# --- assemble ----------------------------------------------------------------------------


def test_assemble_collects_each_agents_findings() -> None:
    outcomes = [
        _extract("extract-a", ["Acme", "Jane Smith"], ["$4.2 million"], "Acme grew."),
        _extract("extract-b", ["Acme", "Globex"], ["$4.2 million", "12%"], "Globex shrank."),
        _outcome("classify-a", output={"label": "finance", "confidence": 0.9, "keywords": []}),
        _outcome("analyse-0", output={"findings": ["Acme grew 12%.", "Globex shrank."]}),
    ]
    result = assemble(outcomes, [o.subtask_id for o in outcomes])
    assert result["entities"] == ["Acme", "Jane Smith", "Globex"]
    assert result["figures"] == ["$4.2 million", "12%"]
    assert result["labels"] == {"classify-a": "finance"}
    assert result["findings"] == ["Acme grew 12%.", "Globex shrank."]
    assert result["missing"] == []
    assert result["unusable"] == []


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
    result = assemble(outcomes, ["extract-a", "classify-a", "analyse-0"])
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
    result = assemble(outcomes, [])
    assert len(result["entities"]) == 50
    assert result["entities"][:10] == [f"Entity 0-{j}" for j in range(10)]


# --- findings_text -----------------------------------------------------------------------


def test_findings_text_reads_usable_outputs_as_sentences() -> None:
    outcomes = [
        _extract("extract-a", ["Acme"], [], "Acme reported record revenue."),
        _outcome("classify-a", output={"label": "finance"}),
        _outcome("classify-b", output={"label": "finance"}),
        _outcome(
            "analyse-0",
            output={"findings": ["[a] Revenue rose 12%.", "Margins widened.", "Revenue rose 12%."]},
        ),
    ]
    # Source tags go, each sentence appears once, and labels become one topic line.
    assert findings_text(outcomes).splitlines() == [
        "Acme reported record revenue.",
        "Revenue rose 12%.",
        "Margins widened.",
        "Topics covered: finance (2).",
    ]


def test_findings_text_leaves_out_unusable_and_empty_outputs() -> None:
    outcomes = [
        _extract("extract-a", [], [], "Kept."),
        _outcome("extract-b", OutcomeStatus.INVALID_OUTPUT, output={"gist": "Not kept."}),
        _outcome("classify-b", OutcomeStatus.FAILED),
        _outcome("analyse-0", output={"findings": []}),
        _outcome("extract-c", output={"entities": []}),
    ]
    assert findings_text(outcomes) == "Kept."


def test_findings_text_of_nothing_is_empty() -> None:
    assert findings_text([]) == ""
