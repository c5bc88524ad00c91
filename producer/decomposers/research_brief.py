"""research_brief: documents and a question become a brief.

Per document, one extraction and one classification on the cheap tier; per group of
documents, one analysis on the reasoning tier; then synthesis on the long-context tier.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleetline.producer.decomposers.base import Decomposer, Plan
from fleetline.shared.errors import SpecError
from fleetline.shared.names import WorkerType
from fleetline.shared.schemas import SubtaskSpec
from fleetline.shared.settings import FleetlineSettings

# Documents one analysis reads together: enough context to compare, small enough to be quick.
ANALYSIS_GROUP_SIZE = 4


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    text: str = Field(min_length=1)


class ResearchBriefInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str = Field(min_length=3, max_length=2_000)
    documents: list[Document] = Field(min_length=1)

    @field_validator("documents")
    @classmethod
    def _unique_ids(cls, documents: list[Document]) -> list[Document]:
        seen: set[str] = set()
        for doc in documents:
            if doc.id in seen:
                raise ValueError(f"document id {doc.id!r} appears more than once")
            seen.add(doc.id)
        return documents


def _check_limits(brief: ResearchBriefInput, settings: FleetlineSettings) -> None:
    """The limits that come from settings, so they cannot live in the model."""
    limits = settings.limits
    errors: list[tuple[str, str]] = []
    if len(brief.documents) > limits.max_documents:
        errors.append(("input.documents", f"at most {limits.max_documents} documents"))
    for i, doc in enumerate(brief.documents):
        if len(doc.text) > limits.max_document_chars:
            errors.append(
                (f"input.documents.{i}.text", f"over {limits.max_document_chars} characters")
            )
    if errors:
        raise SpecError(errors)


def plan_research_brief(brief: ResearchBriefInput, settings: FleetlineSettings) -> Plan:
    _check_limits(brief, settings)

    def spec(worker_type: WorkerType, sid: str, goal: str, text: str) -> SubtaskSpec:
        policy = settings.worker(worker_type)
        return SubtaskSpec(
            id=sid,
            worker_type=worker_type,
            tier=policy.tier,
            instruction=goal,
            text=text,
            max_output_tokens=policy.max_output_tokens,
        )

    subtasks: list[SubtaskSpec] = []
    for doc in brief.documents:
        subtasks.append(spec(WorkerType.EXTRACTION, f"extract-{doc.id}", brief.question, doc.text))
        subtasks.append(
            spec(WorkerType.CLASSIFICATION, f"classify-{doc.id}", brief.question, doc.text)
        )
    docs = brief.documents
    for n, start in enumerate(range(0, len(docs), ANALYSIS_GROUP_SIZE)):
        group = docs[start : start + ANALYSIS_GROUP_SIZE]
        text = "\n\n".join(f"[{d.id}] {d.text}" for d in group)
        subtasks.append(spec(WorkerType.ANALYSIS, f"analyse-{n}", brief.question, text))
    synthesis = spec(WorkerType.SYNTHESIS, "synthesis", brief.question, "")
    return Plan(subtasks=subtasks, synthesis=synthesis)


RESEARCH_BRIEF = Decomposer(
    kind="research_brief",
    input_model=ResearchBriefInput,
    plan=plan_research_brief,
)
