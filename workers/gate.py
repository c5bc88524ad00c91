"""The output validation gate: a model answer must pass its agent's output schema.

An answer that does not parse or validate is sent back once more with the validator's
errors (a correction prompt), a bounded number of times. Invalid output never leaves here:
not to the state store, not to the cache, not to synthesis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from fleetline.shared.models.base import ModelClient, ModelRequest, ModelResponse


@dataclass
class GateResult:
    """What the calls of one gate pass produced: the output, or the last errors, and usage."""

    output: dict[str, Any] | None = None
    errors: str = ""
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    models: list[str] = field(default_factory=list)


def merge_usage(into: GateResult, extra: GateResult) -> GateResult:
    """`into` with the calls, tokens and cost of `extra` added (both were paid for)."""
    into.calls += extra.calls
    into.tokens_in += extra.tokens_in
    into.tokens_out += extra.tokens_out
    into.cost_usd += extra.cost_usd
    into.models = [*extra.models, *into.models]
    return into


def validation_errors(exc: ValidationError, limit: int = 5) -> str:
    """The first few errors as `field: reason`, the way a model can act on them."""
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'output'}: {e['msg']}"
        for e in exc.errors()[:limit]
    )


class CallBudget(Protocol):
    """Where the gate holds each further call's bound and counts what every call billed."""

    def reserve(self, request: ModelRequest) -> str | None:
        """Hold the call's bound: None when held, else why it may not be made."""
        ...

    def bill_response(self, request: ModelRequest, response: ModelResponse) -> float:
        """Count an answered call; return its cost."""
        ...


def call_through_gate(
    client: ModelClient,
    request: ModelRequest,
    schema: type[BaseModel],
    budget: CallBudget,
    corrections: int,
    *,
    first_held: bool = True,
) -> GateResult:
    """Call the model, validate, and re-ask with the errors up to `corrections` times.

    Every call is billed to `budget` as soon as it answers; every call but a first one
    that is already held (`first_held`) is reserved before it is made, and the loop stops
    (`invalid_output`) when the next call does not fit. Provider errors propagate to the
    caller (retry policy is theirs); what was billed before one stays billed.
    """
    result = GateResult()
    base = request.call_id
    for n in range(corrections + 1):
        if n > 0:
            request = request.model_copy(
                update={"correction": result.errors, "call_id": f"{base}:c{n}"}
            )
        if n > 0 or not first_held:
            refused = budget.reserve(request)
            if refused is not None:
                result.errors += f"; no further call: {refused}"
                return result
        response = client.complete(request)
        result.calls += 1
        result.tokens_in += response.tokens_in
        result.tokens_out += response.tokens_out
        result.cost_usd += budget.bill_response(request, response)
        result.models.append(response.model)
        try:
            result.output = schema.model_validate_json(response.text).model_dump(mode="json")
        except ValidationError as exc:
            result.errors = validation_errors(exc)
            continue
        result.errors = ""
        return result
    return result
