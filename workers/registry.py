"""Every specialist by worker type."""

from shared.names import WorkerType
from workers.analysis import ANALYSIS
from workers.classification import CLASSIFICATION
from workers.extraction import EXTRACTION
from workers.specialist import Specialist
from workers.synthesis_prompt import SYNTHESIS

SPECIALISTS: dict[WorkerType, Specialist] = {
    s.worker_type: s for s in (EXTRACTION, CLASSIFICATION, ANALYSIS, SYNTHESIS)
}
