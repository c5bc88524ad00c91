"""The example pipeline: `document_pipeline`, one document and a question, stage by stage.

extract (cheap tier) -> enrich (a tool: each entity looked up in the reference table
shipped with the example, over its own breaker) -> analyse (reasoning tier) -> synthesise
(long-context tier). Each stage checks the output of the one before against its model,
and each output is checkpointed: a run that fails at analyse resumes there
(`fleetline resume JOB`), without extracting or looking anything up again.

It reuses the research fleet's agents; the enrich tool is its own.
"""

from __future__ import annotations

import json
import os
import time
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetline import Plan, pipeline, stage
from fleetline.examples import reference_table
from fleetline.examples.research import (
    MAX_DOCUMENT_CHARS,
    AnalysisOutput,
    ExtractionOutput,
    analysis,
    extraction,
    fleet,
    synthesis,
)


class LookupSettings(BaseSettings):
    """The enrich tool's own settings (the example's, not Fleetline's)."""

    model_config = SettingsConfigDict(env_prefix="FLEETLINE_EXAMPLES_", extra="ignore")

    # A file each run of the lookup appends one JSON line to, as a service's access log
    # would: its own record of how often it ran, apart from the fleet's.
    lookup_log: str = ""


@lru_cache(maxsize=1)
def lookup_settings() -> LookupSettings:
    return LookupSettings()


class Entity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    kind: str
    summary: str


class EnrichedDocument(BaseModel):
    """The extraction with each entity looked up: those the table knows, and those not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gist: str = Field(min_length=1, max_length=2_000)
    figures: list[str] = Field(max_length=200)
    entities: list[Entity] = Field(max_length=200)
    unknown: list[str] = Field(max_length=200)


class DocumentPipelineInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str = Field(min_length=3, max_length=2_000)
    document: str = Field(min_length=1, max_length=MAX_DOCUMENT_CHARS)


@fleet.tool("entity_lookup", timeout_s=5, output=EnrichedDocument, max_retries=2)
def entity_lookup(args: dict[str, Any]) -> dict[str, Any]:
    """Each extracted entity looked up in the reference table."""
    extracted = ExtractionOutput.model_validate(args["input"])
    found: list[dict[str, Any]] = []
    unknown: list[str] = []
    for name in extracted.entities:
        entry = reference_table.lookup(name)
        if entry is None:
            unknown.append(name)
        elif all(e["name"] != entry["name"] for e in found):
            found.append(dict(entry))
    _log_run(extracted.entities, len(found))
    return {
        "gist": extracted.gist,
        "figures": extracted.figures,
        "entities": found,
        "unknown": unknown,
    }


def _log_run(names: list[str], found: int) -> None:
    path = lookup_settings().lookup_log
    if not path:
        return
    line = json.dumps({"looked_up": names, "found": found, "pid": os.getpid(), "t": time.time()})
    # One O_APPEND write per line keeps lines whole when several processes log at once.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def facts(enriched: dict[str, Any]) -> str:
    """What the analysis reads: the gist, what the table says of each entity, the figures."""
    doc = EnrichedDocument.model_validate(enriched)
    lines = [doc.gist, *(e.summary for e in doc.entities)]
    if doc.unknown:
        lines.append(f"Not in the reference table: {', '.join(doc.unknown)}.")
    if doc.figures:
        lines.append(f"Figures mentioned: {', '.join(doc.figures)}.")
    return "\n".join(lines)


def findings(analysed: dict[str, Any]) -> str:
    """What the synthesis reads: the analysis's findings, one a line."""
    return "\n".join(AnalysisOutput.model_validate(analysed).findings)


@fleet.job("document_pipeline", input=DocumentPipelineInput)
def document_pipeline(inp: DocumentPipelineInput) -> Plan:
    """extract -> enrich -> analyse -> synthesise, each on the checkpoint before it."""
    return pipeline(
        [
            stage(extraction.step(id="extract", text=inp.document)),
            stage(entity_lookup.step(id="enrich"), validate_input=ExtractionOutput),
            stage(
                analysis.step(id="analyse", goal=inp.question),
                validate_input=EnrichedDocument,
                render=facts,
            ),
            stage(
                synthesis.step(id="synthesise", goal=inp.question),
                validate_input=AnalysisOutput,
                render=findings,
            ),
        ]
    )
