"""Model clients: one interface, three providers (openai, anthropic, sim), and the price table."""

from fleetline.shared.models.base import ModelClient, ModelRequest, ModelResponse, render_messages
from fleetline.shared.models.prices import call_cost_usd, worst_case_cost_usd

__all__ = [
    "ModelClient",
    "ModelRequest",
    "ModelResponse",
    "call_cost_usd",
    "render_messages",
    "worst_case_cost_usd",
]
