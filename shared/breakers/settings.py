"""The breakers' settings: when they open, how long they stay open, and what a dead Redis means."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetline.shared import keys

RedisDownPolicy = Literal["fail_open", "fail_closed"]


class BreakerSettings(BaseSettings):
    """Fleet-wide circuit breakers, one per (agent, model) and one per tool."""

    model_config = SettingsConfigDict(env_prefix="FLEETLINE_BREAKER_", extra="ignore")

    # The failure rate is measured over this sliding window, in `buckets` steps: a result
    # leaves the window between window_s - window_s/buckets and window_s after it came.
    window_s: float = Field(default=30.0, gt=0, le=3600)
    buckets: int = Field(default=30, ge=1, le=600)
    # A handful of failures of a quiet model say little: below min_calls results in the
    # window the breaker stays closed whatever the rate.
    min_calls: int = Field(default=10, ge=1)
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    # Open this long, then half-open: one probe call of the fleet decides.
    reset_timeout_s: float = Field(default=30.0, gt=0)
    # The probe's lease: longer than a model call may take (workers' max_call_s defaults
    # to 30 s), or a slow probe would let a second one in. A probe whose process died
    # holds the breaker half-open, rejecting every call, for this long at most.
    probe_timeout_s: float = Field(default=45.0, gt=0)
    # Redis unreachable: fail_open lets calls through (and logs), fail_closed rejects them.
    on_redis_down: RedisDownPolicy = "fail_open"
    # The breaker's own client gives up this fast, with no retries: the policy decides
    # within a fraction of a second instead of stalling the subtask.
    socket_timeout_s: float = Field(default=0.3, gt=0, le=2)
    connect_timeout_s: float = Field(default=0.3, gt=0, le=2)
    # After Redis failed once, apply the policy without asking it for this long (0: ask
    # every time), so that an outage costs each call nothing rather than a timeout.
    redis_down_recheck_s: float = Field(default=1.0, ge=0, le=60)

    @model_validator(mode="after")
    def _consistent(self) -> BreakerSettings:
        if self.window_s * 1000 / self.buckets < 1:
            raise ValueError("window_s / buckets must be at least 1 ms")
        if self.reset_timeout_s + self.probe_timeout_s >= keys.BREAKER_IDLE_TTL_S:
            raise ValueError(
                "reset_timeout_s + probe_timeout_s must stay below the breaker keys' idle "
                f"TTL ({keys.BREAKER_IDLE_TTL_S}s)"
            )
        return self

    @property
    def bucket_ms(self) -> int:
        """The width of one window bucket, in whole milliseconds."""
        return max(1, round(self.window_s * 1000 / self.buckets))

    @property
    def reset_ms(self) -> int:
        return max(1, round(self.reset_timeout_s * 1000))

    @property
    def probe_ms(self) -> int:
        return max(1, round(self.probe_timeout_s * 1000))

    @property
    def fail_open(self) -> bool:
        return self.on_redis_down == "fail_open"
