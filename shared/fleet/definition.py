"""A fleet's declarations: its agents, tools and job kinds, registered by name.

This is the part of `fleetline.Fleet` that every process needs (producers for the job
kinds, workers for the agents and tools, beat for the queues); the root package adds
submitting to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from fleetline.shared.errors import ConfigError
from fleetline.shared.fleet.declarations import (
    DEFAULT_RETRY_ON,
    Agent,
    Collect,
    Combine,
    JobKind,
    SimAnswer,
    Tool,
)
from fleetline.shared.fleet.plan import Plan
from fleetline.shared.names import check_name
from fleetline.shared.policy import POLICY_FIELDS, WorkerPolicy

F = TypeVar("F", bound=Callable[..., Any])


class FleetDefinition:
    """The agents, tools and job kinds of one fleet.

    Args:
        name: the fleet's name (lower case, as an agent's), shown in logs and errors.
    """

    def __init__(self, name: str) -> None:
        try:
            self.name = check_name(name, "fleet")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.agents: dict[str, Agent] = {}
        self.tools: dict[str, Tool] = {}
        self.jobs: dict[str, JobKind] = {}

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name}: agents {sorted(self.agents)}, "
            f"tools {sorted(self.tools)}, jobs {sorted(self.jobs)}>"
        )

    # --- declaring ----------------------------------------------------------------------

    def agent(
        self,
        name: str,
        *,
        tier: str,
        output: type[BaseModel],
        prompt: str,
        sim: SimAnswer | None = None,
        **policy: Any,
    ) -> Agent:
        """Declare an agent: a worker type whose steps ask a model of `tier`.

        Args:
            name: its queue and task name (`^[a-z][a-z0-9_]{0,47}$`).
            tier: the tier of models that serve it (settings map tiers to models).
            output: the pydantic model every answer must validate against.
            prompt: the instruction; `{goal}` is replaced by each step's goal.
            sim: the offline sim provider's answer for it (default: the schema filled
                from the text).
            policy: defaults of its worker policy (`concurrency`, `max_retries`,
                `fallback_tiers`, `cache_ttl_s`, ...), overridden by
                `FLEETLINE_WORKERS__<NAME>__<FIELD>`.
        """
        self._check_new(name, "agent")
        if not (isinstance(output, type) and issubclass(output, BaseModel)):
            raise ConfigError(f"agent {name!r}: output must be a pydantic model class")
        self._check_name(tier, f"agent {name!r}: tier")
        found = Agent(
            name=name,
            fleet=self.name,
            tier=tier,
            output=output,
            prompt=prompt,
            policy=self._policy(name, {"tier": tier, **policy}),
            sim=sim,
        )
        self.agents[name] = found
        return found

    def tool(
        self,
        name: str,
        *,
        timeout_s: float | None = None,
        retry_on: Iterable[type[BaseException]] = DEFAULT_RETRY_ON,
        output: type[BaseModel] | None = None,
        **policy: Any,
    ) -> Callable[[Callable[[dict[str, Any]], dict[str, Any]]], Tool]:
        """Declare a tool: a worker type whose steps run the decorated function.

        Args:
            name: its queue and task name.
            timeout_s: the most one run may take (the policy's `max_call_s`).
            retry_on: exception types another attempt may get past; any other exception
                fails the step at once.
            output: a pydantic model the function's result must validate against.
            policy: worker policy defaults, as for agents (`max_retries`, `pool`, ...).
        """
        self._check_new(name, "tool")
        if timeout_s is not None:
            policy["max_call_s"] = timeout_s
        checked = self._policy(name, policy)
        retryable = tuple(retry_on)

        def register(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Tool:
            self._check_new(name, "tool")
            found = Tool(
                name=name,
                fleet=self.name,
                fn=fn,
                policy=checked,
                retry_on=retryable,
                output=output,
            )
            self.tools[name] = found
            return found

        return register

    def job(
        self,
        kind: str,
        *,
        input: type[BaseModel],
        combine: Combine | None = None,
        collect: Collect | None = None,
    ) -> Callable[[Callable[[Any], Plan]], JobKind]:
        """Declare a job kind; the decorated function is its pure, deterministic decomposer.

        Args:
            kind: the spec's `kind`.
            input: the model a spec's `input` must validate against.
            combine: the fan-out's then-step text from the usable outcomes.
            collect: the structured part of the result from the outcomes (default: each
                usable output by step id).
        """
        self._check_name(kind, "job kind")
        if kind in self.jobs:
            raise ConfigError(f"fleet {self.name}: two job kinds named {kind!r}")

        def register(fn: Callable[[Any], Plan]) -> JobKind:
            found = JobKind(
                kind=kind,
                fleet=self.name,
                input=input,
                decompose=fn,
                combine=combine,
                collect=collect,
            )
            self.jobs[kind] = found
            return found

        return register

    # --- reading ------------------------------------------------------------------------

    @property
    def worker_types(self) -> dict[str, Agent | Tool]:
        """Every agent and tool by name: the fleet's queues."""
        return {**self.agents, **self.tools}

    def plan(self, kind: str, raw_input: dict[str, Any]) -> Plan:
        """Validate `raw_input` for `kind` and decompose it.

        Raises:
            KeyError: no such job kind.
            pydantic.ValidationError: the input does not validate.
            PlanError: the decomposer refused the input (an empty plan, repeated ids).
            ConfigError: the plan cannot run on this fleet (a step of an agent or tool it
                does not declare): a bug of the fleet's code, not of the input.
        """
        job = self.jobs[kind]
        plan = job.decompose(job.input.model_validate(raw_input))
        if not isinstance(plan, Plan):
            raise ConfigError(f"job kind {kind!r} returned {type(plan).__name__}, not a Plan")
        for step in plan.all_steps():
            own = self.worker_types.get(step.worker_type)
            if own is not step.worker:
                raise ConfigError(
                    f"step {step.id!r} names {type(step.worker).__name__.lower()} "
                    f"{step.worker_type!r}, which fleet {self.name} does not declare"
                )
        if plan.supervision is not None:
            for name, tool in plan.supervision.tools.items():
                if self.tools.get(name) is not tool:
                    raise ConfigError(
                        f"action tool {name!r} is not a tool fleet {self.name} declares"
                    )
        return plan

    # --- checks -------------------------------------------------------------------------

    def _check_name(self, name: str, what: str) -> None:
        try:
            check_name(name, what)
        except ValueError as exc:
            raise ConfigError(f"fleet {self.name}: {exc}") from None

    def _check_new(self, name: str, what: str) -> None:
        self._check_name(name, what)
        if name in self.agents or name in self.tools:
            raise ConfigError(f"fleet {self.name}: two agents or tools named {name!r}")

    def _policy(self, name: str, policy: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(policy) - POLICY_FIELDS)
        if unknown:
            raise ConfigError(
                f"{name}: unknown policy field(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(POLICY_FIELDS))})"
            )
        try:
            WorkerPolicy.model_validate(policy)
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"{name}: invalid policy: {detail}") from None
        return dict(policy)
