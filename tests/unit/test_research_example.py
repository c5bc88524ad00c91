"""The example fleet, research_brief: the same documents always give the same steps, on the
right tiers; its input's limits; its combine; and its hand-written sim answers."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from fleetline.examples import research, research_sim
from fleetline.examples.research import (
    ANALYSIS_GROUP_SIZE,
    CLASSIFICATION_LABELS,
    MAX_DOCUMENT_CHARS,
    MAX_DOCUMENTS,
    AnalysisOutput,
    ClassificationOutput,
    ExtractionOutput,
    ResearchBriefInput,
    SynthesisOutput,
    findings_text,
)
from fleetline.producer.submit import PlannedJob, parse_spec, step_spec
from fleetline.shared.errors import SpecError
from fleetline.shared.fleet import DEFAULT_APP, Plan, load_fleet
from fleetline.shared.models.base import ModelRequest
from fleetline.shared.models.sim import SimClient
from fleetline.shared.schemas import OutcomeStatus, StepKind, SubtaskOutcome
from fleetline.shared.settings import FleetlineSettings, SimSettings, load_settings

QUESTION = "How did chip makers' revenue change last year?"
AGENTS = ("extraction", "classification", "analysis", "synthesis")
OUTPUTS: dict[str, type[BaseModel]] = {
    "extraction": ExtractionOutput,
    "classification": ClassificationOutput,
    "analysis": AnalysisOutput,
    "synthesis": SynthesisOutput,
}


def _docs(n: int, text: str = "Revenue rose.") -> list[dict[str, str]]:
    return [{"id": f"doc{i}", "text": f"{text} ({i})"} for i in range(n)]


def _spec(documents: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    return {
        "kind": "research_brief",
        "input": {"question": QUESTION, "documents": documents, **extra},
    }


def _planned(
    documents: list[dict[str, str]], settings: FleetlineSettings | None = None, **extra: Any
) -> PlannedJob:
    return parse_spec(_spec(documents, **extra), settings or load_settings())[1]


def _plan(documents: list[dict[str, str]], **extra: Any) -> Plan:
    raw = {"question": QUESTION, "documents": documents, **extra}
    return load_settings().fleet.plan("research_brief", raw)


def _of(plan: PlannedJob, worker_type: str) -> list[str]:
    return [s.id for s in plan.subtasks if s.worker_type == worker_type]


# --- the fleet ---------------------------------------------------------------------------


def test_the_example_is_the_default_app() -> None:
    assert load_fleet() is research.fleet
    assert load_fleet(DEFAULT_APP) is research.fleet
    assert load_settings().fleet is research.fleet


def test_the_fleet_declares_its_agents_its_tools_and_four_job_kinds() -> None:
    fleet = research.fleet
    assert fleet.name == "research"
    # research_brief's four agents; the pipeline reuses three, the debate brings two, the
    # supervised notify one (and its two action tools).
    assert sorted(fleet.agents) == sorted([*AGENTS, "debater", "judge", "notifier"])
    assert list(fleet.tools) == ["entity_lookup", "webhook", "email"]
    assert sorted(fleet.jobs) == ["debate", "document_pipeline", "notify", "research_brief"]
    job = fleet.jobs["research_brief"]
    assert job.input is ResearchBriefInput
    assert job.combine is findings_text
    assert job.collect is research.collect
    for name, output in OUTPUTS.items():
        assert fleet.agents[name].output is output
        assert fleet.agents[name].sim is getattr(research_sim, name)


def test_the_job_kind_is_callable_as_plain_python() -> None:
    brief = ResearchBriefInput.model_validate({"question": QUESTION, "documents": _docs(2)})
    plan = research.research_brief(brief)
    assert [s.id for s in plan.steps] == [
        "extract-doc0",
        "classify-doc0",
        "extract-doc1",
        "classify-doc1",
        "analyse-0",
    ]
    assert plan.then is not None
    assert plan.then.id == "synthesis"


# --- plans -------------------------------------------------------------------------------


def test_same_input_gives_identical_subtasks_and_ids() -> None:
    docs = _docs(7)
    first, second = _planned(docs), _planned([dict(d) for d in docs])
    assert first.subtasks == second.subtasks
    assert first.then == second.then
    ids = [s.id for s in first.subtasks]
    assert len(ids) == len(set(ids)), "subtask ids must be unique within a job"
    assert first.then.id not in ids


def test_the_plan_is_a_fan_out_of_the_fleets_own_steps() -> None:
    plan = _plan(_docs(3))
    assert plan.shape == "fan_out"
    assert plan.then is not None
    assert plan.then.worker is research.synthesis
    assert all(s.worker is research.fleet.agents[s.worker_type] for s in plan.all_steps())
    assert [s.id for s in plan.all_steps()][-1] == "synthesis"
    assert not any(s.critical for s in plan.all_steps())


def test_ids_follow_the_document_ids() -> None:
    plan = _planned([{"id": "alpha", "text": "A."}, {"id": "b.2", "text": "B."}])
    assert _of(plan, "extraction") == ["extract-alpha", "extract-b.2"]
    assert _of(plan, "classification") == ["classify-alpha", "classify-b.2"]


@pytest.mark.parametrize("n", [1, 3, 4, 5, 8, 9])
def test_counts_per_worker_type(n: int) -> None:
    plan = _planned(_docs(n))
    assert len(_of(plan, "extraction")) == n
    assert len(_of(plan, "classification")) == n
    assert len(_of(plan, "analysis")) == math.ceil(n / ANALYSIS_GROUP_SIZE)
    assert _of(plan, "synthesis") == []
    assert plan.then.worker_type == "synthesis"
    assert len(plan.subtasks) == 2 * n + math.ceil(n / ANALYSIS_GROUP_SIZE)


def test_default_tiers_per_worker_type() -> None:
    plan = _planned(_docs(5))
    tiers = {s.worker_type: s.tier for s in plan.subtasks}
    assert tiers == {"extraction": "cheap", "classification": "cheap", "analysis": "reasoning"}
    assert plan.then.tier == "long_context"
    assert {s.kind for s in [*plan.subtasks, plan.then]} == {StepKind.AGENT}


def test_tier_and_output_limit_come_from_settings() -> None:
    settings = FleetlineSettings(
        workers={"classification": {"tier": "reasoning", "max_output_tokens": 77}}
    ).bind(research.fleet)
    plan = _planned(_docs(2), settings)
    for s in plan.subtasks:
        policy = settings.worker(s.worker_type)
        assert (s.tier, s.max_output_tokens) == (policy.tier, policy.max_output_tokens)
    classified = [s for s in plan.subtasks if s.worker_type == "classification"]
    assert {(s.tier, s.max_output_tokens) for s in classified} == {("reasoning", 77)}


def test_step_spec_carries_the_steps_goal_and_text() -> None:
    settings = load_settings()
    step = research.analysis.step(id="analyse-x", text="[a] Chips sold.", goal=QUESTION)
    spec = step_spec(step, settings)
    assert (spec.id, spec.worker_type, spec.kind) == ("analyse-x", "analysis", StepKind.AGENT)
    assert (spec.instruction, spec.text, spec.args) == (QUESTION, "[a] Chips sold.", None)
    assert spec.max_output_tokens == settings.worker("analysis").max_output_tokens


def test_analysis_reads_its_group_of_four_documents() -> None:
    docs = _docs(9)
    analyses = [s for s in _planned(docs).subtasks if s.worker_type == "analysis"]
    groups = [docs[0:4], docs[4:8], docs[8:9]]
    assert [a.id for a in analyses] == ["analyse-0", "analyse-1", "analyse-2"]
    for analysis, group in zip(analyses, groups, strict=True):
        for doc in docs:
            marked = f"[{doc['id']}] {doc['text']}" in analysis.text
            assert marked is (doc in group), (analysis.id, doc["id"])


def test_per_document_subtasks_carry_the_question_and_their_document() -> None:
    docs = _docs(3)
    plan = _planned(docs)
    texts = {d["id"]: d["text"] for d in docs}
    for s in plan.subtasks:
        assert s.instruction == QUESTION
        if s.worker_type in ("extraction", "classification"):
            assert s.text == texts[s.id.split("-", 1)[1]]
    assert plan.then.instruction == QUESTION
    # The then-step's text is the fan-in's to write, from the outcomes.
    assert plan.then.text == ""


# --- input -------------------------------------------------------------------------------


def test_duplicate_document_ids_are_refused_with_their_path() -> None:
    docs = [{"id": "same", "text": "one"}, {"id": "same", "text": "two"}]
    with pytest.raises(ValidationError) as info:
        _plan(docs)
    errors = info.value.errors()
    assert [e["loc"] for e in errors] == [("documents",)]
    assert "'same'" in errors[0]["msg"]
    with pytest.raises(SpecError) as spec_info:
        _planned(docs)
    assert [field for field, _ in spec_info.value.errors] == ["input.documents"]


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ({"documents": _docs(1)}, ("question",)),
        ({"question": QUESTION, "documents": []}, ("documents",)),
        ({"question": QUESTION, "documents": [{"id": "a"}]}, ("documents", 0, "text")),
        ({"question": QUESTION, "documents": [{"id": "a", "text": ""}]}, ("documents", 0, "text")),
        ({"question": QUESTION, "documents": [{"id": "a b", "text": "x"}]}, ("documents", 0, "id")),
        ({"question": QUESTION, "documents": _docs(1), "extra": 1}, ("extra",)),
    ],
)
def test_bad_input_names_the_field(raw: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        load_settings().fleet.plan("research_brief", raw)
    assert [e["loc"] for e in info.value.errors()] == [loc]


def test_an_unknown_kind_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec({**_spec(_docs(1)), "kind": "weekly_digest"}, load_settings())
    assert info.value.errors == [
        (
            "kind",
            "unknown job kind 'weekly_digest' (known: debate, document_pipeline, notify, "
            "research_brief)",
        )
    ]


def test_too_many_documents_is_refused() -> None:
    docs = [{"id": f"d{i}", "text": "x"} for i in range(MAX_DOCUMENTS + 1)]
    assert len(_planned(docs[:MAX_DOCUMENTS]).subtasks) > 0
    with pytest.raises(SpecError) as info:
        _planned(docs)
    assert [field for field, _ in info.value.errors] == ["input.documents"]
    assert f"{MAX_DOCUMENTS}" in info.value.errors[0][1]


def test_overlong_documents_are_refused_by_index() -> None:
    docs = [
        {"id": "ok", "text": "x" * MAX_DOCUMENT_CHARS},
        {"id": "long", "text": "x" * (MAX_DOCUMENT_CHARS + 1)},
        {"id": "fine", "text": "short"},
        {"id": "longer", "text": "x" * (MAX_DOCUMENT_CHARS + 50)},
    ]
    with pytest.raises(SpecError) as info:
        _planned(docs)
    assert [field for field, _ in info.value.errors] == [
        "input.documents.1.text",
        "input.documents.3.text",
    ]
    assert "input.documents.1.text" in str(info.value)


# --- combine: what synthesis reads -------------------------------------------------------


def _outcome(
    sid: str, status: OutcomeStatus = OutcomeStatus.OK, output: dict[str, Any] | None = None
) -> SubtaskOutcome:
    worker_type = {"extract": "extraction", "classify": "classification", "analyse": "analysis"}
    return SubtaskOutcome(
        subtask_id=sid,
        worker_type=worker_type[sid.split("-", 1)[0]],
        status=status,
        output=output,
    )


def test_findings_text_reads_usable_outputs_as_sentences() -> None:
    outcomes = [
        _outcome("extract-a", output={"entities": ["Acme"], "gist": "Acme reported revenue."}),
        _outcome("classify-a", output={"label": "finance"}),
        _outcome("classify-b", output={"label": "finance"}),
        _outcome(
            "analyse-0",
            output={"findings": ["[a] Revenue rose 12%.", "Margins widened.", "Revenue rose 12%."]},
        ),
    ]
    # Source tags go, each sentence appears once, and labels become one topic line.
    assert findings_text(outcomes).splitlines() == [
        "Acme reported revenue.",
        "Revenue rose 12%.",
        "Margins widened.",
        "Topics covered: finance (2).",
    ]


def test_findings_text_leaves_out_unusable_and_empty_outputs() -> None:
    outcomes = [
        _outcome("extract-a", output={"entities": [], "figures": [], "gist": "Kept."}),
        _outcome("extract-b", OutcomeStatus.INVALID_OUTPUT, output={"gist": "Not kept."}),
        _outcome("classify-b", OutcomeStatus.FAILED),
        _outcome("analyse-0", output={"findings": []}),
        _outcome("extract-c", output={"entities": []}),
    ]
    assert findings_text(outcomes) == "Kept."


def test_findings_text_of_nothing_is_empty() -> None:
    assert findings_text([]) == ""


# --- the sim answers ---------------------------------------------------------------------

FINANCE = (
    "Acme Corp reported revenue of $4.2 million in 2023, up 12% from the prior year. "
    "Analysts at the Bank of America expect profit margins to widen as prices rise. "
    "The stock rose 3.5 percent after the earnings call.\n"
    "Jane Smith, the chief executive, said investors welcomed the dividend."
)
GOAL = "How did Acme revenue change in 2023 and why?"


def _instruction(agent: str) -> str:
    return research.fleet.agents[agent].instruction(GOAL)


def _request(worker_type: str = "extraction", **overrides: Any) -> ModelRequest:
    agent = research.fleet.agents[worker_type]
    fields: dict[str, Any] = {
        "model": "sim-small",
        "api_model": "sim-small",
        "worker_type": worker_type,
        "instruction": agent.instruction(GOAL),
        "document": FINANCE,
        "max_output_tokens": 400,
        "timeout_s": 5.0,
        "call_id": "job1:doc1",
        "output_schema": agent.output_schema,
    }
    fields.update(overrides)
    return ModelRequest(**fields)


def _sim(**settings: Any) -> SimClient:
    answers = {name: a.sim for name, a in research.fleet.agents.items() if a.sim}
    return SimClient(SimSettings(**settings), answers)


def test_extraction_finds_names_and_figures() -> None:
    out = ExtractionOutput.model_validate(
        research_sim.extraction(_instruction("extraction"), FINANCE)
    )
    assert "Acme Corp" in out.entities
    assert "Bank of America" in out.entities
    assert "Jane Smith" in out.entities
    assert {"12%", "$4.2 million", "2023", "3.5 percent"} <= set(out.figures)
    assert out.gist.startswith("Acme Corp reported revenue")


def test_classification_labels_by_keywords() -> None:
    instruction = _instruction("classification")
    out = ClassificationOutput.model_validate(research_sim.classification(instruction, FINANCE))
    assert out.label == "finance"
    assert out.label in CLASSIFICATION_LABELS
    assert {"revenue", "profit", "stock"} <= set(out.keywords)
    assert 0.5 < out.confidence <= 1

    health = "The hospital said patients in the clinical trial responded to the new drug."
    out = ClassificationOutput.model_validate(research_sim.classification(instruction, health))
    assert out.label == "health"
    plain = "Nothing here but a walk in the park on a sunny afternoon."
    out = ClassificationOutput.model_validate(research_sim.classification(instruction, plain))
    assert (out.label, out.keywords) == ("other", [])


def test_every_label_has_keywords() -> None:
    assert set(research_sim._TOPICS) | {"other"} == set(CLASSIFICATION_LABELS)


def test_analysis_picks_sentences_relevant_to_the_question() -> None:
    out = AnalysisOutput.model_validate(research_sim.analysis(_instruction("analysis"), FINANCE))
    assert out.findings[0].startswith("Acme Corp reported revenue of $4.2 million in 2023")
    assert 1 <= len(out.findings) <= 3
    assert 0 < out.relevance <= 1


def test_analysis_reads_the_question_from_the_agents_own_instruction() -> None:
    # The question is the goal in the prompt; the schema line after it is not searched.
    unrelated = research.analysis.instruction("Which hospital ran the trial?")
    related = research.analysis.instruction(GOAL)
    assert (
        research_sim.analysis(unrelated, FINANCE)["relevance"]
        < research_sim.analysis(related, FINANCE)["relevance"]
    )


def test_synthesis_builds_a_brief_from_upstream_findings() -> None:
    upstream = findings_text(
        [
            _outcome(
                "analyse-0", output={"findings": ["Acme revenue grew 12% in 2023.", "It rained."]}
            ),
            _outcome("analyse-1", output={"findings": ["Higher prices drove Acme revenue."]}),
        ]
    )
    out = SynthesisOutput.model_validate(
        research_sim.synthesis(_instruction("synthesis"), upstream)
    )
    assert "Acme revenue grew 12% in 2023." in out.brief
    assert "Higher prices drove Acme revenue." in out.brief
    assert 1 <= len(out.key_points) <= 5
    assert out.key_points[0] != "It rained."


def test_synthesis_of_no_findings_says_so() -> None:
    out = SynthesisOutput.model_validate(research_sim.synthesis(_instruction("synthesis"), ""))
    assert out.brief == "No usable findings were available."


@pytest.mark.parametrize("worker_type", AGENTS)
def test_the_sim_gives_the_agents_own_answer(worker_type: str) -> None:
    response = _sim().complete(_request(worker_type))
    answer = getattr(research_sim, worker_type)(_instruction(worker_type), FINANCE)
    assert OUTPUTS[worker_type].model_validate_json(response.text) == OUTPUTS[
        worker_type
    ].model_validate(answer)


@pytest.mark.parametrize("worker_type", AGENTS)
def test_every_answer_validates_and_fits_the_token_limit(worker_type: str) -> None:
    for max_tokens in (40, 120, 1200):
        response = _sim().complete(_request(worker_type, max_output_tokens=max_tokens))
        OUTPUTS[worker_type].model_validate_json(response.text)
        assert 0 < response.tokens_out <= max_tokens
        assert response.tokens_in > 0


@pytest.mark.parametrize("worker_type", AGENTS)
def test_empty_document_still_gives_a_valid_answer(worker_type: str) -> None:
    response = _sim().complete(_request(worker_type, document=""))
    OUTPUTS[worker_type].model_validate_json(response.text)


@pytest.mark.parametrize("worker_type", AGENTS)
def test_malformed_answers_fail_the_schema_until_corrected(worker_type: str) -> None:
    sim = _sim(malformed_rate=1.0)
    schema = OUTPUTS[worker_type]
    for attempt in range(1, 8):
        bad = sim.complete(_request(worker_type, attempt=attempt))
        assert bad.tokens_out > 0
        with pytest.raises(ValidationError):
            schema.model_validate_json(bad.text)
    fixed = sim.complete(_request(worker_type, correction="field required: entities"))
    schema.model_validate_json(fixed.text)
