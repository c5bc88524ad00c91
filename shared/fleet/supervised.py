"""The supervised shape: agents draft actions, policies review them, approved ones run once.

    plan = supervised([drafter.step("t1", text=...), drafter.step("t2", text=...)],
                      tools=[webhook, email], rules=[AmountLimit("cap", "deny", limit=500)])

Each draft is an agent step whose output may propose actions under `actions`:

    {"actions": [{"type": "webhook", "args": {"url": "https://...", "body": "..."}}]}

An action's type names one of the plan's tools. No action runs before the supervisor has
reviewed it against the job kind's `rules` and the fleet's policies from settings
(`shared/action_policies.py`): approved actions run as steps of their tool, under an
idempotency key derived from the job, the draft and the action, so that no retry,
redelivery or replay performs one twice; blocked ones never run; `needs_review` ones wait
for `fleetline approve` or `reject` until the review timeout, then count as rejected.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from fleetline.shared.action_policies import Rule
from fleetline.shared.fleet.declarations import Agent, Tool
from fleetline.shared.fleet.plan import Plan, PlanError, Step
from fleetline.shared.names import NAME_PATTERN

# The output field that holds a draft's proposed actions.
ACTIONS_FIELD = "actions"
MAX_ACTIONS = 20
# The argument the supervisor gives every action's tool: its key on the receiving side.
KEY_ARG = "idempotency_key"
ACTION_ID_ARG = "action_id"


class ProposedAction(BaseModel):
    """One action as an agent proposes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(pattern=NAME_PATTERN)
    args: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Supervision:
    """How a supervised plan runs its actions: the tools they may name, the job kind's own
    rules, and how long a review may wait (None: FLEETLINE_SUPERVISOR_REVIEW_TIMEOUT_S)."""

    tools: dict[str, Tool]
    rules: tuple[Rule, ...] = ()
    review_timeout_s: float | None = None


def supervised(
    drafts: Sequence[Step],
    *,
    tools: Sequence[Tool],
    rules: Sequence[Rule] = (),
    review_timeout_s: float | None = None,
) -> Plan:
    """Run `drafts` in parallel; review every action they propose before it runs.

    Args:
        drafts: agent steps (at least one) whose outputs may hold `actions`.
        tools: the tools an action's `type` may name.
        rules: the job kind's own policies (the fleet's from settings apply too).
        review_timeout_s: how long a `needs_review` action waits for a reviewer.

    Raises:
        PlanError: naming the argument that cannot run.
    """
    steps = tuple(drafts)
    if not steps:
        raise PlanError("a supervised plan needs at least one draft")
    for step in steps:
        if not isinstance(step, Step) or not isinstance(step.worker, Agent):
            raise PlanError("a supervised plan's drafts are agent steps (agent.step(...))")
    by_name: dict[str, Tool] = {}
    for tool in tools:
        if not isinstance(tool, Tool):
            raise PlanError(f"tools: {tool!r} is not a tool (declare it with fleet.tool)")
        by_name[tool.name] = tool
    if not by_name:
        raise PlanError("tools: a supervised plan needs at least one action tool")
    for rule in rules:
        if not isinstance(rule, Rule):
            raise PlanError(f"rules: {rule!r} is not a policy rule")
    if review_timeout_s is not None and review_timeout_s <= 0:
        raise PlanError(f"review_timeout_s: {review_timeout_s} is not above 0")
    supervision = Supervision(by_name, tuple(rules), review_timeout_s)
    return Plan(steps=steps, shape="supervised", supervision=supervision)


def proposed(output: dict[str, Any] | None) -> tuple[list[ProposedAction], str | None]:
    """The actions a draft's output proposes, and why they cannot be read (None: they can).

    A draft whose actions do not parse proposes none: nothing half-read ever runs.
    """
    if not output or output.get(ACTIONS_FIELD) is None:
        return [], None
    raw = output[ACTIONS_FIELD]
    if not isinstance(raw, list):
        return [], f"{ACTIONS_FIELD}: not a list"
    if len(raw) > MAX_ACTIONS:
        return [], f"{ACTIONS_FIELD}: {len(raw)} actions, more than {MAX_ACTIONS}"
    actions = []
    for index, item in enumerate(raw):
        try:
            actions.append(ProposedAction.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in (ACTIONS_FIELD, index, *first["loc"]))
            return [], f"{where}: {first['msg']}"
    return actions, None


def action_id(step_id: str, index: int) -> str:
    """The id of a draft's `index`-th action (from 0): `<draft>-a<n>`, stable across runs."""
    return f"{step_id}-a{index + 1}"


def action_step_id(action: str) -> str:
    """The step id of an action's tool run."""
    return f"{action}:run"


def idempotency_key(job_id: str, step_id: str, action: str) -> str:
    """The action's idempotency key: the same for every attempt, delivery and replay."""
    digest = hashlib.sha256(f"{job_id}\x1f{step_id}\x1f{action}".encode()).hexdigest()
    return f"fl-{digest[:40]}"
