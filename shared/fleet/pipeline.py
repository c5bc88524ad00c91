"""The pipeline shape: stages that run in order, each on the output of the one before.

    plan = pipeline([
        stage(extract.step("extract", text=doc)),
        stage(lookup.step("enrich"), validate_input=Extraction),
        stage(analyse.step("analyse", goal=question), validate_input=Enriched, render=facts),
    ])

A stage is an agent's or a tool's step. The first stage's input is the job's input; every
later stage's is the output the stage before it checkpointed. A stage that declares
`validate_input` gets its input checked against that model first: an input that does not
validate fails the job at that stage, naming the field and the reason. An agent stage
reads its input as text (`render`, by default the input as JSON after the step's own
text); a tool stage is called with its step's arguments and the input under `"input"`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from fleetline.shared.fleet.declarations import Tool
from fleetline.shared.fleet.plan import Plan, PlanError, Step

# How an agent stage reads its (validated) input.
Render = Callable[[dict[str, Any]], str]


class StageInputError(ValueError):
    """A stage's input does not validate against the stage's `validate_input` model."""

    def __init__(self, stage: str, errors: list[tuple[str, str]]) -> None:
        detail = "; ".join(f"{where}: {reason}" for where, reason in errors)
        super().__init__(f"stage {stage}: input is invalid: {detail}")
        self.errors = errors


@dataclass(frozen=True)
class Stage:
    """One stage of a pipeline: a step, the model its input must validate against, and
    how an agent stage reads that input. Make stages with `stage(...)`."""

    step: Step
    validate_input: type[BaseModel] | None = None
    render: Render | None = None

    @property
    def name(self) -> str:
        """The stage's name: its step's id."""
        return self.step.id

    def check_input(self, value: dict[str, Any]) -> dict[str, Any]:
        """The input as the stage receives it: validated (and as its model dumps it) when
        the stage declares `validate_input`.

        Raises:
            StageInputError: naming each field that does not validate, with the reason.
        """
        if self.validate_input is None:
            return value
        try:
            return self.validate_input.model_validate(value).model_dump(mode="json")
        except ValidationError as exc:
            errors = [
                (".".join(str(p) for p in err["loc"]) or "input", err["msg"])
                for err in exc.errors()
            ]
            raise StageInputError(self.name, errors) from None

    def text(self, value: dict[str, Any], first: bool) -> str:
        """What an agent stage reads: its input rendered (the first stage's: its step's
        own text, unless it renders the job's input)."""
        if self.render is not None:
            rendered = self.render(value)
        elif first:
            return self.step.text
        else:
            rendered = json.dumps(value, ensure_ascii=False, sort_keys=True)
        return f"{self.step.text}\n\n{rendered}" if self.step.text else rendered

    def args(self, value: dict[str, Any]) -> dict[str, Any]:
        """What a tool stage is called with: its step's arguments and its input."""
        return {**self.step.args, "input": value}


def stage(
    step: Step, *, validate_input: type[BaseModel] | None = None, render: Render | None = None
) -> Stage:
    """A pipeline stage running `step`.

    Args:
        step: an agent's or a tool's step (`agent.step(...)`, `tool.step(...)`); its id is
            the stage's name.
        validate_input: the pydantic model the stage's input must validate against.
        render: for an agent stage, the text it reads from its input (default: the input
            as JSON, after the step's own text).
    """
    if validate_input is not None and not (
        isinstance(validate_input, type) and issubclass(validate_input, BaseModel)
    ):
        raise PlanError(f"stage {step.id}: validate_input must be a pydantic model class")
    if render is not None and isinstance(step.worker, Tool):
        raise PlanError(f"stage {step.id}: a tool stage takes its input as arguments, not text")
    return Stage(step=step, validate_input=validate_input, render=render)


def pipeline(stages: Sequence[Stage | Step]) -> Plan:
    """Run `stages` in order; each one's output is checkpointed before the next starts.

    Args:
        stages: stages (`stage(...)`), or plain steps for stages that check no input.

    Raises:
        PlanError: no stages, two with one name, or a name holding ':'.
    """
    made = []
    for item in stages:
        made_stage = stage(item) if isinstance(item, Step) else item
        if not isinstance(made_stage, Stage):
            raise PlanError(f"a pipeline holds stages (stage(...)), not {type(item).__name__}")
        made.append(made_stage)
    return Plan(steps=tuple(s.step for s in made), shape="pipeline", stages=tuple(made))


def run_step_id(name: str, run: int) -> str:
    """The step id of a stage in a run: its name in the first run, `<name>:r<n>` after
    (each run's outcomes are recorded apart)."""
    return name if run == 1 else f"{name}:r{run}"
