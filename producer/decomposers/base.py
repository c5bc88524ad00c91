"""What a decomposer is: an input model for its kind, and a pure function to a plan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from fleetline.shared.schemas import SubtaskSpec
from fleetline.shared.settings import FleetlineSettings


@dataclass(frozen=True)
class Plan:
    """The subtasks of a job (run in parallel) and the synthesis that closes it."""

    subtasks: list[SubtaskSpec]
    synthesis: SubtaskSpec


@dataclass(frozen=True)
class Decomposer:
    """A job kind: how its input is checked, and how it becomes subtasks."""

    kind: str
    input_model: type[BaseModel]
    plan: Callable[[Any, FleetlineSettings], Plan]

    def decompose(self, raw_input: dict[str, Any], settings: FleetlineSettings) -> Plan:
        """Validate the input (raises pydantic.ValidationError) and plan the job."""
        return self.plan(self.input_model.model_validate(raw_input), settings)
