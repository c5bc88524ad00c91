"""research_brief: the same documents always give the same subtasks, on the right tiers."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from fleetline.producer.decomposers import DECOMPOSERS, Plan
from fleetline.producer.decomposers.research_brief import ANALYSIS_GROUP_SIZE
from fleetline.shared.errors import SpecError
from fleetline.shared.names import Tier, WorkerType
from fleetline.shared.settings import FleetlineSettings, LimitsSettings

QUESTION = "How did chip makers' revenue change last year?"


def _docs(n: int, text: str = "Revenue rose.") -> list[dict[str, str]]:
    return [{"id": f"doc{i}", "text": f"{text} ({i})"} for i in range(n)]


def _plan(
    documents: list[dict[str, str]], settings: FleetlineSettings | None = None, **extra: Any
) -> Plan:
    raw = {"question": QUESTION, "documents": documents, **extra}
    return DECOMPOSERS["research_brief"].decompose(raw, settings or FleetlineSettings())


def _of(plan: Plan, worker_type: WorkerType) -> list[str]:
    return [s.id for s in plan.subtasks if s.worker_type is worker_type]


def test_registry_is_keyed_by_kind() -> None:
    assert {kind: d.kind for kind, d in DECOMPOSERS.items()} == {"research_brief": "research_brief"}


def test_same_input_gives_identical_subtasks_and_ids() -> None:
    docs = _docs(7)
    first, second = _plan(docs), _plan([dict(d) for d in docs])
    assert first.subtasks == second.subtasks
    assert first.synthesis == second.synthesis
    ids = [s.id for s in first.subtasks]
    assert len(ids) == len(set(ids)), "subtask ids must be unique within a job"
    assert first.synthesis.id not in ids


def test_ids_follow_the_document_ids() -> None:
    plan = _plan([{"id": "alpha", "text": "A."}, {"id": "b.2", "text": "B."}])
    assert _of(plan, WorkerType.EXTRACTION) == ["extract-alpha", "extract-b.2"]
    assert _of(plan, WorkerType.CLASSIFICATION) == ["classify-alpha", "classify-b.2"]


@pytest.mark.parametrize("n", [1, 3, 4, 5, 8, 9])
def test_counts_per_worker_type(n: int) -> None:
    plan = _plan(_docs(n))
    assert len(_of(plan, WorkerType.EXTRACTION)) == n
    assert len(_of(plan, WorkerType.CLASSIFICATION)) == n
    assert len(_of(plan, WorkerType.ANALYSIS)) == math.ceil(n / ANALYSIS_GROUP_SIZE)
    assert _of(plan, WorkerType.SYNTHESIS) == []
    assert plan.synthesis.worker_type is WorkerType.SYNTHESIS
    assert len(plan.subtasks) == 2 * n + math.ceil(n / ANALYSIS_GROUP_SIZE)


def test_default_tiers_per_worker_type() -> None:
    plan = _plan(_docs(5))
    tiers = {s.worker_type: s.tier for s in plan.subtasks}
    assert tiers == {
        WorkerType.EXTRACTION: Tier.CHEAP,
        WorkerType.CLASSIFICATION: Tier.CHEAP,
        WorkerType.ANALYSIS: Tier.REASONING,
    }
    assert plan.synthesis.tier is Tier.LONG_CONTEXT


def test_tier_and_output_limit_come_from_settings() -> None:
    settings = FleetlineSettings(
        workers={"classification": {"tier": "reasoning", "max_output_tokens": 77}}
    )
    plan = _plan(_docs(2), settings)
    for s in plan.subtasks:
        policy = settings.worker(s.worker_type)
        assert (s.tier, s.max_output_tokens) == (policy.tier, policy.max_output_tokens)
    assert {s.tier for s in plan.subtasks if s.worker_type is WorkerType.CLASSIFICATION} == {
        Tier.REASONING
    }


def test_analysis_reads_its_group_of_four_documents() -> None:
    docs = _docs(9)
    analyses = [s for s in _plan(docs).subtasks if s.worker_type is WorkerType.ANALYSIS]
    groups = [docs[0:4], docs[4:8], docs[8:9]]
    assert [a.id for a in analyses] == ["analyse-0", "analyse-1", "analyse-2"]
    for analysis, group in zip(analyses, groups, strict=True):
        for doc in docs:
            marked = f"[{doc['id']}] {doc['text']}" in analysis.text
            assert marked is (doc in group), (analysis.id, doc["id"])


def test_per_document_subtasks_carry_the_question_and_their_document() -> None:
    docs = _docs(3)
    plan = _plan(docs)
    texts = {d["id"]: d["text"] for d in docs}
    for s in plan.subtasks:
        assert s.instruction == QUESTION
        if s.worker_type in (WorkerType.EXTRACTION, WorkerType.CLASSIFICATION):
            assert s.text == texts[s.id.split("-", 1)[1]]
    assert plan.synthesis.instruction == QUESTION


def test_duplicate_document_ids_are_refused_with_their_path() -> None:
    docs = [{"id": "same", "text": "one"}, {"id": "same", "text": "two"}]
    with pytest.raises(ValidationError) as info:
        _plan(docs)
    errors = info.value.errors()
    assert [e["loc"] for e in errors] == [("documents",)]
    assert "'same'" in errors[0]["msg"]


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
        DECOMPOSERS["research_brief"].decompose(raw, FleetlineSettings())
    assert [e["loc"] for e in info.value.errors()] == [loc]


def test_too_many_documents_is_refused() -> None:
    settings = FleetlineSettings(limits=LimitsSettings(max_documents=3))
    assert len(_plan(_docs(3), settings).subtasks) > 0
    with pytest.raises(SpecError) as info:
        _plan(_docs(4), settings)
    assert [field for field, _ in info.value.errors] == ["input.documents"]
    assert "3" in info.value.errors[0][1]


def test_overlong_documents_are_refused_by_index() -> None:
    settings = FleetlineSettings(limits=LimitsSettings(max_document_chars=10))
    docs = [
        {"id": "ok", "text": "x" * 10},
        {"id": "long", "text": "x" * 11},
        {"id": "fine", "text": "short"},
        {"id": "longer", "text": "x" * 50},
    ]
    with pytest.raises(SpecError) as info:
        _plan(docs, settings)
    assert [field for field, _ in info.value.errors] == [
        "input.documents.1.text",
        "input.documents.3.text",
    ]
    assert "input.documents.1.text" in str(info.value)
