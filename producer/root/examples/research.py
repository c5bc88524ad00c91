"""The example fleet: `research_brief`, documents and a question become a brief.

Per document, one extraction and one classification on the cheap tier; per group of
documents, one analysis on the reasoning tier; then a synthesis on the long-context tier
reads every usable finding. Built only on the public API, like a team's own fleet:
`FLEETLINE_APP=fleetline.examples.research:fleet` (the default app). The same fleet runs
the other example patterns: `document_pipeline` and `debate` (their own modules).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from fleetline import Fleet, OutcomeStatus, Plan, SubtaskOutcome, fan_out
from fleetline.examples import research_sim

# Documents one analysis reads together: enough context to compare, small enough to be quick.
ANALYSIS_GROUP_SIZE = 4
MAX_DOCUMENTS = 10_000
MAX_DOCUMENT_CHARS = 200_000
# Topic labels the classification agent chooses from.
CLASSIFICATION_LABELS = ("finance", "technology", "health", "policy", "science", "other")


class _Output(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ExtractionOutput(_Output):
    """Named entities and figures found in one document, with a one-line gist."""

    entities: list[str] = Field(max_length=200)
    figures: list[str] = Field(max_length=200)
    gist: str = Field(min_length=1, max_length=2_000)


class ClassificationOutput(_Output):
    """The document's topic label, with the keywords that decided it."""

    label: str = Field(min_length=1, max_length=64)
    confidence: float = Field(ge=0, le=1)
    keywords: list[str] = Field(max_length=50)


class AnalysisOutput(_Output):
    """What a group of documents says about the question."""

    findings: list[str] = Field(min_length=1, max_length=50)
    relevance: float = Field(ge=0, le=1)


class SynthesisOutput(_Output):
    """The brief: an answer to the question built from every usable finding."""

    brief: str = Field(min_length=1, max_length=20_000)
    key_points: list[str] = Field(max_length=50)


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    text: str = Field(min_length=1, max_length=MAX_DOCUMENT_CHARS)


class ResearchBriefInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str = Field(min_length=3, max_length=2_000)
    documents: list[Document] = Field(min_length=1, max_length=MAX_DOCUMENTS)

    @field_validator("documents")
    @classmethod
    def _unique_ids(cls, documents: list[Document]) -> list[Document]:
        seen: set[str] = set()
        for doc in documents:
            if doc.id in seen:
                raise ValueError(f"document id {doc.id!r} appears more than once")
            seen.add(doc.id)
        return documents


fleet = Fleet("research")

extraction = fleet.agent(
    "extraction",
    tier="cheap",
    output=ExtractionOutput,
    # No question here: what a document contains does not depend on who asks, so
    # identical documents of different jobs share cached answers.
    prompt=(
        "Task: extraction.\n"
        "List the named entities (people, organisations, places, products) and the figures "
        "(numbers, amounts, percentages, dates) in the document, and give its gist in one "
        "sentence."
    ),
    sim=research_sim.extraction,
    max_output_tokens=400,
    batch_max_size=8,
)
classification = fleet.agent(
    "classification",
    tier="cheap",
    output=ClassificationOutput,
    prompt=(
        "Task: classification.\n"
        f"Label the document's topic as one of: {', '.join(CLASSIFICATION_LABELS)}; give "
        "your confidence (0-1) and the keywords that decided it."
    ),
    sim=research_sim.classification,
    max_output_tokens=120,
    batch_max_size=8,
)
analysis = fleet.agent(
    "analysis",
    tier="reasoning",
    output=AnalysisOutput,
    prompt=(
        "Task: analysis. Question: {goal}\n"
        "Find what the documents say about the question: the findings that answer it, and "
        "how relevant the documents are to it (0-1)."
    ),
    sim=research_sim.analysis,
    max_output_tokens=800,
    fallback_tiers=["cheap"],
)
synthesis = fleet.agent(
    "synthesis",
    tier="long_context",
    output=SynthesisOutput,
    prompt=(
        "Task: synthesis. Question: {goal}\n"
        "Write a brief that answers the question from the findings in the document, and "
        "list its key points."
    ),
    sim=research_sim.synthesis,
    concurrency=16,
    max_output_tokens=1200,
    fallback_tiers=["cheap"],
)

_SOURCE_TAG = re.compile(r"^\[[\w.-]+\]\s*")


def findings_text(outcomes: list[SubtaskOutcome]) -> str:
    """The usable findings as plain sentences, each once, for the synthesis agent to read."""
    lines: list[str] = []
    topics: Counter[str] = Counter()
    for o in outcomes:
        if o.status is not OutcomeStatus.OK or not o.output:
            continue
        if o.worker_type == analysis.name:
            # Analysis reads documents tagged "[id] ..."; the tag is not part of a finding.
            lines.extend(_SOURCE_TAG.sub("", str(f)) for f in o.output.get("findings", []))
        elif o.worker_type == extraction.name:
            lines.append(str(o.output.get("gist", "")))
        elif o.worker_type == classification.name:
            topics[str(o.output.get("label"))] += 1
    if topics:
        counts = ", ".join(f"{label} ({n})" for label, n in topics.most_common())
        lines.append(f"Topics covered: {counts}.")
    return "\n".join(dict.fromkeys(line.strip() for line in lines if line.strip()))


def collect(outcomes: list[SubtaskOutcome]) -> dict[str, Any]:
    """What each agent found, merged: entities, figures, labels by step, findings."""
    entities: list[str] = []
    figures: list[str] = []
    labels: dict[str, str] = {}
    findings: list[str] = []
    for o in outcomes:
        if o.status is not OutcomeStatus.OK or not o.output:
            continue
        if o.worker_type == extraction.name:
            entities += [e for e in o.output.get("entities", []) if e not in entities]
            figures += [f for f in o.output.get("figures", []) if f not in figures]
        elif o.worker_type == classification.name:
            labels[o.subtask_id] = str(o.output.get("label"))
        elif o.worker_type == analysis.name:
            findings += [str(f) for f in o.output.get("findings", [])]
    return {
        "entities": entities[:50],
        "figures": figures[:50],
        "labels": labels,
        "findings": findings[:50],
    }


@fleet.job("research_brief", input=ResearchBriefInput, combine=findings_text, collect=collect)
def research_brief(brief: ResearchBriefInput) -> Plan:
    """Extraction and classification per document, analysis per group, then synthesis."""
    steps = []
    for doc in brief.documents:
        steps.append(extraction.step(id=f"extract-{doc.id}", text=doc.text, goal=brief.question))
        steps.append(
            classification.step(id=f"classify-{doc.id}", text=doc.text, goal=brief.question)
        )
    docs = brief.documents
    for n, start in enumerate(range(0, len(docs), ANALYSIS_GROUP_SIZE)):
        group = docs[start : start + ANALYSIS_GROUP_SIZE]
        text = "\n\n".join(f"[{d.id}] {d.text}" for d in group)
        steps.append(analysis.step(id=f"analyse-{n}", text=text, goal=brief.question))
    return fan_out(steps, then=synthesis.step(id="synthesis", goal=brief.question))


# The example fleet's other patterns, declared on this fleet by their own modules: a
# pipeline (document_pipeline), a debate (debate) and a supervised job (notify).
from fleetline.examples import debate_panel, document_pipeline, notify  # noqa: E402, F401
