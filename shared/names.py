"""Worker types, queue names and task names: the constants both sides of the wire share.

The producer enqueues by these names and never imports worker modules.
"""

from __future__ import annotations

from enum import StrEnum


class WorkerType(StrEnum):
    """A kind of specialist; each has a Celery queue of the same name."""

    EXTRACTION = "extraction"
    CLASSIFICATION = "classification"
    ANALYSIS = "analysis"
    SYNTHESIS = "synthesis"


class Tier(StrEnum):
    """A price/quality class of model; worker types name a tier, settings map it to models."""

    CHEAP = "cheap"
    REASONING = "reasoning"
    LONG_CONTEXT = "long_context"


# Task names are explicit so that renaming a module never changes the wire.
TASK_EXTRACTION = "fleetline.extraction"
TASK_CLASSIFICATION = "fleetline.classification"
TASK_ANALYSIS = "fleetline.analysis"
TASK_SYNTHESIS = "fleetline.synthesis"
TASK_REAP_DEADLINES = "fleetline.reap_deadlines"
TASK_KILLSWITCH_CHECK = "fleetline.killswitch_check"
TASK_BATCH_RUN = "fleetline.batch_run"

SUBTASK_TASK_NAMES: dict[WorkerType, str] = {
    WorkerType.EXTRACTION: TASK_EXTRACTION,
    WorkerType.CLASSIFICATION: TASK_CLASSIFICATION,
    WorkerType.ANALYSIS: TASK_ANALYSIS,
}

# Housekeeping that finalises jobs runs where synthesis runs: both finish jobs.
TASK_QUEUES: dict[str, str] = {
    TASK_EXTRACTION: WorkerType.EXTRACTION.value,
    TASK_CLASSIFICATION: WorkerType.CLASSIFICATION.value,
    TASK_ANALYSIS: WorkerType.ANALYSIS.value,
    TASK_SYNTHESIS: WorkerType.SYNTHESIS.value,
    TASK_REAP_DEADLINES: WorkerType.SYNTHESIS.value,
    # Synthesis keeps running under every switch, so enforcement and batches run there too.
    TASK_KILLSWITCH_CHECK: WorkerType.SYNTHESIS.value,
    TASK_BATCH_RUN: WorkerType.SYNTHESIS.value,
}
