"""Every specialist by worker type."""

from fleetline.shared.names import WorkerType
from fleetline.workers.analysis import ANALYSIS
from fleetline.workers.classification import CLASSIFICATION
from fleetline.workers.extraction import EXTRACTION
from fleetline.workers.specialist import Specialist
from fleetline.workers.synthesis_prompt import SYNTHESIS

SPECIALISTS: dict[WorkerType, Specialist] = {
    s.worker_type: s for s in (EXTRACTION, CLASSIFICATION, ANALYSIS, SYNTHESIS)
}
