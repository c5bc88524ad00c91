"""What a debate round may cost at most: every agent's first call, and the judge's after.

A round is reserved against the job's budget before it runs: if this bound does not fit
in what the job has left, the debate goes to its judge with the rounds it has. Each call
still holds its own bound when it is made (corrections and retries too), as every call does.
"""

from __future__ import annotations

from fleetline.shared.fleet import Agent, Plan, Step
from fleetline.shared.fleet.debate import History, turn_text
from fleetline.shared.models.base import ModelRequest, render_messages
from fleetline.shared.models.prices import call_cost_usd, input_token_bound
from fleetline.shared.settings import FleetlineSettings


def call_bound(settings: FleetlineSettings, step: Step, text: str) -> tuple[float, int]:
    """The most one call of an agent step reading `text` may cost: (USD, tokens), on the
    first model of its tier."""
    agent = step.worker
    if not isinstance(agent, Agent):
        return 0.0, 0  # a tool calls no model
    policy = settings.worker(agent.name)
    model = settings.model_chain(agent.name)[0]
    request = ModelRequest(
        model=model,
        api_model=settings.models[model].api_model or model,
        worker_type=agent.name,
        instruction=agent.instruction(step.goal),
        document=text,
        max_output_tokens=policy.max_output_tokens,
        timeout_s=1.0,
    )
    tokens_in = input_token_bound(*render_messages(request))
    usd = call_cost_usd(settings.models[model], tokens_in, policy.max_output_tokens)
    return usd, tokens_in + policy.max_output_tokens


def round_bound(settings: FleetlineSettings, plan: Plan, history: History) -> tuple[float, int]:
    """The most the next round and the judge after it may cost, with `history` so far."""
    usd, tokens = 0.0, 0
    judge = plan.then
    for step in [*plan.steps, *([judge] if judge is not None else [])]:
        more_usd, more_tokens = call_bound(settings, step, turn_text(step, history))
        usd += more_usd
        tokens += more_tokens
    return usd, tokens
