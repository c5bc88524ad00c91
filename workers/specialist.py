"""What makes one specialist different from another: its prompt and its output schema."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from fleetline.shared.names import WorkerType


@dataclass(frozen=True)
class Specialist:
    """A worker type's prompt template and the schema its model answer must pass."""

    worker_type: WorkerType
    output_schema: type[BaseModel]
    prompt: str

    def instruction(self, goal: str) -> str:
        """The full instruction for one subtask, from the decomposer's goal."""
        return self.prompt.format(goal=goal)
