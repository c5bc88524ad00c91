"""Synthesis: the brief built from every usable finding, on the long-context tier."""

from fleetline.shared.names import WorkerType
from fleetline.shared.outputs import SynthesisOutput
from fleetline.workers.specialist import Specialist

SYNTHESIS = Specialist(
    worker_type=WorkerType.SYNTHESIS,
    output_schema=SynthesisOutput,
    prompt=(
        "Task: synthesis. Question: {goal}\n"
        "Write a brief that answers the question from the findings in the document, and "
        'list its key points. Schema: {{"brief": str, "key_points": [str]}}'
    ),
)
