"""Classification: one topic label per document, on the cheap tier."""

from fleetline.shared.names import WorkerType
from fleetline.shared.outputs import CLASSIFICATION_LABELS, ClassificationOutput
from fleetline.workers.specialist import Specialist

CLASSIFICATION = Specialist(
    worker_type=WorkerType.CLASSIFICATION,
    output_schema=ClassificationOutput,
    prompt=(
        # The question is left out so that a document is classified (and cached) once.
        "Task: classification.\n"
        f"Label the document with one topic from: {', '.join(CLASSIFICATION_LABELS)}. "
        'Schema: {{"label": str, "confidence": float 0..1, "keywords": [str]}}'
    ),
)
