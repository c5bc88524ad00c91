"""The pipeline shape and its state, as pure code: stages, input checks, stage tables, the
diff of two runs, and which stage a resume starts from. No Redis, no workers."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from fleetline import Fleet, PlanError, Stage, pipeline, stage
from fleetline.examples import document_pipeline, reference_table
from fleetline.producer.resume import _start
from fleetline.producer.run_diff import run_diff
from fleetline.shared.errors import NotResumable
from fleetline.shared.fleet import StageInputError
from fleetline.shared.fleet.pipeline import run_step_id
from fleetline.shared.pattern_record import with_pattern
from fleetline.shared.pipeline_state import StageEntry, first_table, resumed_table
from fleetline.shared.schemas import JobResult, JobStatus, OutcomeStatus, SubtaskOutcome
from fleetline.shared.settings import load_settings


class Words(BaseModel):
    words: list[str]


class Count(BaseModel):
    n: int


fleet = Fleet("shapes")
reader = fleet.agent("reader", tier="cheap", output=Words, prompt="List the words.")
counter = fleet.agent("counter", tier="cheap", output=Count, prompt="Count: {goal}")


@fleet.tool("tally")
def tally(args: dict[str, Any]) -> dict[str, Any]:
    return {"n": len(args["input"]["words"])}


def test_a_pipeline_is_its_stages_in_order() -> None:
    plan = pipeline(
        [
            reader.step(id="read", text="a b c"),
            stage(tally.step(id="tally", args={"unit": "word"}), validate_input=Words),
        ]
    )
    assert plan.shape == "pipeline" and plan.then is None
    assert [s.name for s in plan.stages] == ["read", "tally"]
    assert isinstance(plan.stages[0], Stage) and plan.stages[0].validate_input is None
    assert plan.stages[1].validate_input is Words


@pytest.mark.parametrize(
    ("stages", "reason"),
    [
        ([], "at least one step"),
        ([reader.step(id="a"), reader.step(id="a")], "more than once"),
        ([reader.step(id="a:r2")], "hold no ':'"),
        (["not a step"], "holds stages"),
    ],
)
def test_a_pipeline_that_cannot_run_is_refused(stages: list[Any], reason: str) -> None:
    with pytest.raises(PlanError, match=reason):
        pipeline(stages)


def test_a_tool_stage_reads_no_text() -> None:
    with pytest.raises(PlanError, match="as arguments"):
        stage(tally.step(id="t"), render=lambda value: "")
    with pytest.raises(PlanError, match="pydantic model"):
        stage(tally.step(id="t"), validate_input=dict)  # type: ignore[arg-type]


def test_a_stage_checks_its_input_naming_the_field_and_the_reason() -> None:
    checked = stage(counter.step(id="count"), validate_input=Count)
    assert checked.check_input({"n": "3"}) == {"n": 3}
    with pytest.raises(StageInputError) as info:
        checked.check_input({"n": "three"})
    assert info.value.errors == [
        ("n", "Input should be a valid integer, unable to parse string as an integer")
    ]
    assert "stage count: input is invalid: n:" in str(info.value)


def test_what_a_stage_receives() -> None:
    first = stage(reader.step(id="read", text="the document"))
    assert first.text({"ignored": 1}, first=True) == "the document"
    later = stage(counter.step(id="count", text="Count these."))
    assert later.text({"words": ["a"]}, first=False) == 'Count these.\n\n{"words": ["a"]}'
    rendered = stage(counter.step(id="count"), render=lambda v: " ".join(v["words"]))
    assert rendered.text({"words": ["a", "b"]}, first=False) == "a b"
    tool = stage(tally.step(id="tally", args={"unit": "word"}))
    assert tool.args({"words": ["a"]}) == {"unit": "word", "input": {"words": ["a"]}}


def test_each_run_records_its_stages_under_ids_of_its_own() -> None:
    assert run_step_id("analyse", 1) == "analyse"
    assert run_step_id("analyse", 3) == "analyse:r3"


def _entry(name: str, status: str, run: int = 1, cost: float = 0.0) -> StageEntry:
    return StageEntry(
        name=name,
        agent="a",
        status=status,
        attempts=1,
        cost_usd=cost,
        checkpoint_version=7 if status == "ok" else None,
        run=run,
        step_id=run_step_id(name, run),
    )


def test_a_resumed_run_keeps_the_stages_before_its_first_and_starts_the_rest_over() -> None:
    plan = pipeline([reader.step(id="read"), counter.step(id="count"), tally.step(id="tally")])
    table = first_table(plan)
    assert [(e.status, e.step_id) for e in table] == [
        ("running", "read"),
        ("pending", "count"),
        ("pending", "tally"),
    ]
    failed = [_entry("read", "ok"), _entry("count", "failed"), _entry("tally", "pending")]
    fresh = resumed_table(failed, 1, 2, "sim-long")
    assert fresh[0] == failed[0]
    assert [(e.status, e.run, e.step_id, e.model) for e in fresh[1:]] == [
        ("running", 2, "count:r2", "sim-long"),
        ("pending", 2, "tally:r2", None),
    ]
    assert fresh[1].checkpoint_version is None and fresh[1].attempts == 0


def test_a_resume_starts_at_the_first_stage_that_is_not_ok_or_a_named_earlier_one() -> None:
    failed = [_entry("read", "ok"), _entry("count", "failed"), _entry("tally", "pending")]
    assert _start("j", JobStatus.FAILED, failed, None) == 1
    assert _start("j", JobStatus.FAILED, failed, "read") == 0
    with pytest.raises(NotResumable, match="stage count before it has no checkpoint"):
        _start("j", JobStatus.FAILED, failed, "tally")
    with pytest.raises(NotResumable, match="no stage 'nope'"):
        _start("j", JobStatus.FAILED, failed, "nope")
    done = [_entry(n, "ok") for n in ("read", "count", "tally")]
    with pytest.raises(NotResumable, match="--from"):
        _start("j", JobStatus.SUCCEEDED, done, None)
    assert _start("j", JobStatus.SUCCEEDED, done, "count") == 1


def test_a_result_carries_the_stage_table_and_the_runs_at_any_time() -> None:
    fields = {"stages": '[{"name": "read"}]', "pattern": '{"run": 2, "runs": [{"run": 1}]}'}
    assert with_pattern(None, fields) == {
        "stages": [{"name": "read"}],
        "run": 2,
        "runs": [{"run": 1}],
    }
    assert with_pattern({"answer": 1}, {}) == {"answer": 1}
    assert with_pattern(None, {}) is None


def _outcome(step_id: str, cost: float, output: dict[str, Any]) -> SubtaskOutcome:
    return SubtaskOutcome(
        subtask_id=step_id,
        worker_type="a",
        status=OutcomeStatus.OK,
        cost_usd=cost,
        output=output,
    )


def test_diff_shows_each_stage_of_two_runs_side_by_side() -> None:
    before = [_entry("read", "ok", cost=0.1), _entry("count", "ok", cost=0.5)]
    after = [before[0], _entry("count", "ok", run=2, cost=0.2)]
    job = JobResult(
        job_id="j",
        kind="k",
        tenant="t",
        status=JobStatus.SUCCEEDED,
        completeness=1.0,
        result={
            "run": 2,
            "stages": [e.model_dump() for e in after],
            "runs": [{"run": 1, "status": "succeeded", "stages": [e.model_dump() for e in before]}],
        },
        subtasks=[
            _outcome("read", 0.1, {"w": 1}),
            _outcome("count", 0.5, {"n": 1}),
            _outcome("count:r2", 0.2, {"n": 2}),
        ],
    )
    diff = run_diff(job)
    assert diff["runs"] == [1, 2] and diff["cost_usd"] == [0.6, 0.3]
    read, count = diff["stages"]
    assert not read["rerun"] and read["before"] == read["after"]
    assert count["rerun"]
    assert (count["before"]["output"], count["after"]["output"]) == ({"n": 1}, {"n": 2})
    once = job.model_copy(update={"result": {**(job.result or {}), "runs": []}})
    with pytest.raises(NotResumable, match="has run once"):
        run_diff(once)


def test_the_example_pipeline_and_its_lookup() -> None:
    settings = load_settings()
    plan = settings.fleet.plan(
        "document_pipeline", {"question": "Who builds wind farms?", "document": "Nordwind..."}
    )
    assert [(s.name, s.step.worker_type) for s in plan.stages] == [
        ("extract", "extraction"),
        ("enrich", "entity_lookup"),
        ("analyse", "analysis"),
        ("synthesise", "synthesis"),
    ]
    assert [settings.worker(s.step.worker_type).tier for s in plan.stages] == [
        "cheap",
        None,
        "reasoning",
        "long_context",
    ]
    enriched = document_pipeline.entity_lookup(
        {
            "input": {
                "entities": ["EIB", "Nordwind Energy", "Acme"],
                "figures": ["$2 billion"],
                "gist": "A loan.",
            }
        }
    )
    assert [e["name"] for e in enriched["entities"]] == [
        "European Investment Bank",
        "Nordwind Energy",
    ]
    assert enriched["unknown"] == ["Acme"]
    text = document_pipeline.facts(enriched)
    assert "A loan." in text and "Not in the reference table: Acme." in text
    assert reference_table.lookup("oslo") is not None
