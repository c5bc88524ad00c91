"""Cost of a call from the price table (USD per million input and output tokens)."""

from __future__ import annotations

from fleetline.shared.settings import ModelSpec

_PER_TOKEN = 1e-6


def call_cost_usd(spec: ModelSpec, tokens_in: int, tokens_out: int) -> float:
    """What a call cost, from the provider-reported token counts."""
    return (
        tokens_in * spec.input_usd_per_mtok + tokens_out * spec.output_usd_per_mtok
    ) * _PER_TOKEN


def worst_case_cost_usd(spec: ModelSpec, tokens_in: int, max_output_tokens: int) -> float:
    """The most a call can cost: its input plus every output token it may produce."""
    return call_cost_usd(spec, tokens_in, max_output_tokens)


# Tokens a provider may add per message around its text (role markers, separators).
MESSAGE_OVERHEAD_TOKENS = 8


def input_token_bound(*messages: str) -> int:
    """An upper bound of the input tokens of a call with these messages, for any tokenizer.

    No token of a byte-level tokenizer is shorter than one UTF-8 byte, so the bytes bound
    the text's tokens; each message adds a few tokens of framing. For English text this is
    about four times the usual estimate: reservations hold more than a call costs, and
    settle down to what it did cost.
    """
    return sum(len(m.encode("utf-8")) + MESSAGE_OVERHEAD_TOKENS for m in messages)


def estimate_tokens(text: str) -> int:
    """A provider-independent token estimate (about four characters a token)."""
    return max(1, (len(text) + 3) // 4)
