"""How one worker type (an agent or a tool) runs: its tier, pool, limits and retry policy.

Defaults come from the fleet's code (`fleet.agent(..., concurrency=64)`), and
`FLEETLINE_WORKERS__<NAME>__<FIELD>` overrides any field of them at start-up.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Pool = Literal["threads", "prefork", "gevent", "solo"]


class WorkerPolicy(BaseModel):
    """The policy of one agent or tool. Tools have no tier and make no model call."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tier: str | None = None
    pool: Pool = "threads"
    concurrency: int = Field(default=32, ge=1, le=2000)
    # The ceiling for one model call or tool run (seconds).
    max_call_s: float = Field(default=30.0, gt=0)
    soft_time_limit_s: float = Field(default=60.0, gt=0)
    time_limit_s: float = Field(default=75.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=20)
    retry_backoff_s: float = Field(default=0.5, ge=0)
    retry_backoff_max_s: float = Field(default=30.0, ge=0)
    max_output_tokens: int = Field(default=512, gt=0)
    # Cheaper tiers to fall back to when every model of `tier` is unavailable or unaffordable.
    fallback_tiers: list[str] = Field(default_factory=list)
    # Re-asks with the validator's errors after an answer fails the output schema.
    correction_attempts: int = Field(default=2, ge=0, le=5)
    # How long a validated answer is reused for an identical call; 0 turns caching off.
    cache_ttl_s: int = Field(default=86_400, ge=0)
    # Calls of this agent that arrive together share one model call, up to this many (1:
    # never batch). A batch closes when full, after batch_max_wait_ms, or when no call
    # joined it for batch_idle_ms, so a lone call waits only the idle time.
    batch_max_size: int = Field(default=1, ge=1, le=64)
    batch_max_wait_ms: float = Field(default=50.0, ge=0)
    batch_idle_ms: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _limits_ordered(self) -> WorkerPolicy:
        if self.soft_time_limit_s >= self.time_limit_s:
            raise ValueError("soft_time_limit_s must be below time_limit_s")
        return self


POLICY_FIELDS = frozenset(WorkerPolicy.model_fields)
