"""Agents, tools and job kinds: what a fleet is made of.

Each is a frozen object that `Fleet.agent`, `Fleet.tool` and `Fleet.job` create; the
functions a tool or a job kind wraps stay callable as plain Python.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from fleetline.shared.fleet.plan import Plan, Step
from fleetline.shared.fleet.sketch import schema_sketch

if TYPE_CHECKING:
    from fleetline.shared.schemas import SubtaskOutcome

# The sim's own answer for an agent, from the (instruction, document) it is asked about;
# without one the sim fills the output schema from the text.
SimAnswer = Callable[[str, str], dict[str, Any]]
# The then-step's text from the usable outcomes of a fan-out.
Combine = Callable[[list["SubtaskOutcome"]], str]
# The structured part of a job's result, built from its outcomes without any model.
Collect = Callable[[list["SubtaskOutcome"]], dict[str, Any]]

# Exceptions of a tool that another attempt may get past, unless the tool says otherwise.
DEFAULT_RETRY_ON: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)


@dataclass(frozen=True, eq=False)
class Agent:
    """A worker type that asks a model: its prompt, tier and output schema (the gate).

    `{goal}` in the prompt is replaced by the step's goal.
    """

    name: str
    fleet: str
    tier: str
    output: type[BaseModel]
    prompt: str
    policy: Mapping[str, Any] = field(default_factory=dict)
    sim: SimAnswer | None = None

    def step(self, id: str, text: str = "", goal: str = "", critical: bool = False) -> Step:
        """A step of this agent reading `text` towards `goal`; `critical` fails the job
        when this step has no usable outcome."""
        return Step(id=id, worker=self, goal=goal, text=text, critical=critical)

    def instruction(self, goal: str) -> str:
        """The full instruction of one step: the prompt with its goal, then the schema."""
        return f"{self.prompt.replace('{goal}', goal).rstrip()}\nSchema: {self.schema_hint}"

    @cached_property
    def schema_hint(self) -> str:
        """The output schema as a compact sketch a model can follow."""
        return json.dumps(schema_sketch(self.output_schema), separators=(",", ":"))

    @cached_property
    def output_schema(self) -> dict[str, Any]:
        """The output model's JSON schema (what the sim fills for agents it has no answer for)."""
        return self.output.model_json_schema()


@dataclass(frozen=True, eq=False)
class Tool:
    """A worker type that runs plain Python (an HTTP call, a query) instead of a model.

    Calling it runs the function, as a test or a script would.
    """

    name: str
    fleet: str
    fn: Callable[[dict[str, Any]], dict[str, Any]]
    policy: Mapping[str, Any] = field(default_factory=dict)
    retry_on: tuple[type[BaseException], ...] = DEFAULT_RETRY_ON
    output: type[BaseModel] | None = None

    def __call__(self, args: dict[str, Any]) -> dict[str, Any]:
        return self.fn(args)

    def step(self, id: str, args: Mapping[str, Any] | None = None, critical: bool = False) -> Step:
        """A step of this tool, called with `args` (JSON values)."""
        return Step(id=id, worker=self, args=dict(args or {}), critical=critical)


@dataclass(frozen=True, eq=False)
class JobKind:
    """A kind of job: its input model and its pure decomposer. Calling it plans a job."""

    kind: str
    fleet: str
    input: type[BaseModel]
    decompose: Callable[[Any], Plan]
    combine: Combine | None = None
    collect: Collect | None = None

    def __call__(self, inp: Any) -> Plan:
        return self.decompose(inp)
