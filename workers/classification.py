"""Classification: one topic label per document, on the cheap tier."""

from shared.names import WorkerType
from shared.outputs import CLASSIFICATION_LABELS, ClassificationOutput
from workers.specialist import Specialist

CLASSIFICATION = Specialist(
    worker_type=WorkerType.CLASSIFICATION,
    output_schema=ClassificationOutput,
    prompt=(
        "Task: classification. Context: {goal}\n"
        f"Label the document with one topic from: {', '.join(CLASSIFICATION_LABELS)}. "
        'Schema: {{"label": str, "confidence": float 0..1, "keywords": [str]}}'
    ),
)
