"""Plans: what a job kind's decomposer returns, built from the steps of agents and tools.

A decomposer is deterministic orchestration code: it makes steps and puts them in a plan
shape, and never calls a model, a tool or Redis. Three shapes:

- `fan_out` (orchestrator-worker, a Celery chord): its steps run in parallel, then one
  step reads their outcomes.
- `pipeline` (`shared.fleet.pipeline`): stages run in order, each on the checkpointed
  output of the one before.
- `debate` (`shared.fleet.debate`): agents answer in rounds until they agree, then a
  judge reads the history.
- `supervised` (`shared.fleet.supervised`): agents draft actions in parallel; each action
  runs only once the supervisor's policies (or a reviewer) approve it, and at most once.

Workers plan a job again from its stored spec when they need its shape (a stage's input
model, a debate's `agree`): the same input gives the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from fleetline.shared.fleet.debate import DebateRules
    from fleetline.shared.fleet.declarations import Agent, Tool
    from fleetline.shared.fleet.pipeline import Stage
    from fleetline.shared.fleet.supervised import Supervision

Shape = Literal["fan_out", "pipeline", "debate", "supervised"]


class PlanError(ValueError):
    """A decomposer built a plan that cannot run (empty, or two steps with one id)."""


@dataclass(frozen=True)
class Step:
    """One step of a plan: an agent reading `text` towards `goal`, or a tool called with
    `args`. Make steps with `agent.step(...)` and `tool.step(...)`."""

    id: str
    worker: Agent | Tool
    goal: str = ""
    text: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    critical: bool = False

    @property
    def worker_type(self) -> str:
        """The agent's or tool's name: its queue and its task."""
        return self.worker.name


@dataclass(frozen=True)
class Plan:
    """The steps of a job in a shape the fleet knows how to run.

    `stages` (a pipeline's, one per step), `rules` (a debate's) and `supervision` (a
    supervised plan's) say how the shape runs; `pipeline()`, `debate()` and `supervised()`
    fill them.
    """

    steps: tuple[Step, ...]
    then: Step | None = None
    shape: Shape = "fan_out"
    stages: tuple[Stage, ...] = ()
    rules: DebateRules | None = None
    supervision: Supervision | None = None

    def __post_init__(self) -> None:
        # A plan built by hand gets the checks fan_out makes: ids become Celery task ids.
        if not self.steps:
            raise PlanError(f"a {self.shape} needs at least one step")
        if self.shape in ("fan_out", "debate") and self.then is None:
            raise PlanError(f"a {self.shape} needs a then-step")
        if self.shape == "pipeline" and (
            self.then is not None or len(self.stages) != len(self.steps)
        ):
            raise PlanError("a pipeline is its stages, one per step, with no then-step")
        if self.shape == "debate" and self.rules is None:
            raise PlanError("a debate needs its rules (build it with debate())")
        if self.shape == "supervised" and (self.supervision is None or self.then is not None):
            raise PlanError(
                "a supervised plan is its drafts and tools (build it with supervised())"
            )
        seen: set[str] = set()
        for step in self.all_steps():
            if not isinstance(step, Step):
                raise PlanError(f"a plan holds steps (agent.step(...)), not {type(step).__name__}")
            if step.id in seen:
                raise PlanError(f"step id {step.id!r} appears more than once")
            if self.shape != "fan_out" and ":" in step.id:
                # Runs and rounds get `<id>:r<n>`: an id with a colon could collide with one.
                raise PlanError(f"step id {step.id!r}: a {self.shape}'s step ids hold no ':'")
            seen.add(step.id)

    def all_steps(self) -> list[Step]:
        """Every step of the plan, the closing one last."""
        return [*self.steps, *([self.then] if self.then is not None else [])]


def fan_out(steps: list[Step] | tuple[Step, ...], then: Step) -> Plan:
    """Run `steps` in parallel, then `then` on their usable outcomes.

    Args:
        steps: the parallel steps (at least one); each id once.
        then: the step that reads the outcomes (the chord's callback). Its text is what the
            job's `combine` makes of the outcomes (by default, each usable output listed).

    Raises:
        PlanError: no steps, or two steps with the same id.
    """
    return Plan(steps=tuple(steps), then=then)
