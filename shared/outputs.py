"""The output schema each worker type's model answer must validate against (the gate)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from fleetline.shared.names import WorkerType


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


OUTPUT_SCHEMAS: dict[WorkerType, type[_Output]] = {
    WorkerType.EXTRACTION: ExtractionOutput,
    WorkerType.CLASSIFICATION: ClassificationOutput,
    WorkerType.ANALYSIS: AnalysisOutput,
    WorkerType.SYNTHESIS: SynthesisOutput,
}

# Topic labels the classification agent chooses from (the sim classifies by keywords).
CLASSIFICATION_LABELS: tuple[str, ...] = (
    "finance",
    "technology",
    "health",
    "policy",
    "science",
    "other",
)
