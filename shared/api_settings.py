"""Settings of the HTTP API (`fleetline serve`): FLEETLINE_API_*."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    """What the HTTP API allows each caller."""

    model_config = SettingsConfigDict(env_prefix="FLEETLINE_API_", extra="ignore")

    # Requests per second each API key may make, with bursts of up to `burst` (a token
    # bucket in Redis, shared by every API process); past it: 429 with Retry-After.
    rate_per_s: float = Field(default=20.0, gt=0)
    burst: int = Field(default=40, ge=1)
