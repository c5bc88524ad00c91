"""A one-agent fleet for the rate-limit tests: each job tags one text on gpt-4o-mini.

The agent `tagger` is served by the tier `openai_mini`, which `fleet_env` maps to the
built-in `gpt-4o-mini` row (provider openai) and nothing else: no fallback, so a call
either reaches the provider at FLEETLINE_OPENAI_BASE_URL or is not made. The then-step is
a tool, so the provider sees exactly one call per job (the tagger's).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from fleetline import Fleet, Plan, fan_out

APP = "tests.integration.rate_fleet:fleet"
TIER = "openai_mini"
MODEL = "gpt-4o-mini"
# Large next to the prompt, so that a call's upper bound (what the fleet reserves) and its
# usage on a server that fills its output to the limit are close: the limit admits about
# as many calls as the server serves.
MAX_OUTPUT_TOKENS = 2000


class Tag(BaseModel):
    label: str = Field(min_length=1)


class Item(BaseModel):
    text: str = Field(min_length=1)


fleet = Fleet("rates")
tagger = fleet.agent(
    "tagger",
    tier=TIER,
    output=Tag,
    prompt="Give the text one short topic label.",
    max_output_tokens=MAX_OUTPUT_TOKENS,
    # A 429 is retried after its Retry-After (up to a whole window) while the deadline
    # allows: retry_delay_s caps the provider's word at retry_backoff_max_s.
    max_retries=3,
    retry_backoff_max_s=60.0,
)


@fleet.tool("tally", max_retries=0)
def tally(args: dict[str, Any]) -> dict[str, Any]:
    return {"done": True}


@fleet.job("tag", input=Item)
def tag(inp: Item) -> Plan:
    return fan_out([tagger.step(id="tag", text=inp.text)], then=tally.step(id="tally"))


def fleet_env(base_url: str) -> dict[str, str]:
    """The settings that run this fleet against an OpenAI-compatible server at `base_url`."""
    return {
        "FLEETLINE_APP": APP,
        f"FLEETLINE_TIERS__{TIER.upper()}": json.dumps([MODEL]),
        "FLEETLINE_OPENAI_BASE_URL": base_url,
        "FLEETLINE_OPENAI_API_KEY": "test",
        # Every call goes to the provider: the texts differ anyway, but a cache hit would
        # take a call out of the server's count.
        "FLEETLINE_CACHE_ENABLED": "false",
    }
