"""The output validation gate: a model answer must pass its worker type's schema.

An answer that does not parse or validate is sent back once more with the validator's
errors (a correction prompt), a bounded number of times. Invalid output never leaves here:
not to the state store, not to the cache, not to synthesis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from fleetline.shared.models.base import ModelClient, ModelRequest
from fleetline.shared.models.prices import call_cost_usd
from fleetline.shared.settings import ModelSpec


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


def call_through_gate(
    client: ModelClient,
    request: ModelRequest,
    schema: type[BaseModel],
    price: ModelSpec,
    corrections: int,
) -> GateResult:
    """Call the model, validate, and re-ask with the errors up to `corrections` times.

    Provider errors propagate to the caller (retry policy is theirs); usage of the calls
    made before one is lost to this result but not to the provider's bill.
    """
    result = GateResult()
    for _ in range(corrections + 1):
        response = client.complete(request)
        result.calls += 1
        result.tokens_in += response.tokens_in
        result.tokens_out += response.tokens_out
        result.cost_usd += call_cost_usd(price, response.tokens_in, response.tokens_out)
        result.models.append(response.model)
        try:
            result.output = schema.model_validate_json(response.text).model_dump(mode="json")
        except ValidationError as exc:
            result.errors = validation_errors(exc)
            request = request.model_copy(update={"correction": result.errors})
            continue
        result.errors = ""
        return result
    return result
