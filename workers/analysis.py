"""Analysis: what a group of documents says about the question, on the reasoning tier."""

from fleetline.shared.names import WorkerType
from fleetline.shared.outputs import AnalysisOutput
from fleetline.workers.specialist import Specialist

ANALYSIS = Specialist(
    worker_type=WorkerType.ANALYSIS,
    output_schema=AnalysisOutput,
    prompt=(
        "Task: analysis. Question: {goal}\n"
        "State the findings in the documents that bear on the question, most relevant "
        'first. Schema: {{"findings": [str], "relevance": float 0..1}}'
    ),
)
