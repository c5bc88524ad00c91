"""Deterministic decomposers by job kind: plain functions, no Celery, no I/O.

Same input, same subtasks, same ids.
"""

from fleetline.producer.decomposers.base import Decomposer, Plan
from fleetline.producer.decomposers.research_brief import RESEARCH_BRIEF

DECOMPOSERS: dict[str, Decomposer] = {d.kind: d for d in (RESEARCH_BRIEF,)}

__all__ = ["DECOMPOSERS", "Decomposer", "Plan"]
