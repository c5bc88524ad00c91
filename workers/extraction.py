"""Extraction: named entities and figures from one document, on the cheap tier."""

from fleetline.shared.names import WorkerType
from fleetline.shared.outputs import ExtractionOutput
from fleetline.workers.specialist import Specialist

EXTRACTION = Specialist(
    worker_type=WorkerType.EXTRACTION,
    output_schema=ExtractionOutput,
    prompt=(
        # No question here: what a document contains does not depend on who asks, so
        # identical documents of different jobs share cached answers.
        "Task: extraction.\n"
        "List the named entities (people, organisations, places, products) and the figures "
        "(numbers, amounts, percentages, dates) in the document, and give its gist in one "
        'sentence. Schema: {{"entities": [str], "figures": [str], "gist": str}}'
    ),
)
