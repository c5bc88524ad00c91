"""Extraction: named entities and figures from one document, on the cheap tier."""

from shared.names import WorkerType
from shared.outputs import ExtractionOutput
from workers.specialist import Specialist

EXTRACTION = Specialist(
    worker_type=WorkerType.EXTRACTION,
    output_schema=ExtractionOutput,
    prompt=(
        "Task: extraction. Context: {goal}\n"
        "List the named entities (people, organisations, places, products) and the figures "
        "(numbers, amounts, percentages, dates) in the document, and give its gist in one "
        'sentence. Schema: {{"entities": [str], "figures": [str], "gist": str}}'
    ),
)
