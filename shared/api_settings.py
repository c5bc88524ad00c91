"""Settings of the HTTP API (`fleetline serve`) and of job callbacks: FLEETLINE_API_*."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetline.shared.callback_hosts import host_refusal, parse_callback_url, parse_pattern

# A webhook secret shorter than this is refused at start-up: it could be guessed.
MIN_WEBHOOK_SECRET_LENGTH = 16


class ApiSettings(BaseSettings):
    """What the HTTP API allows each caller, and where their jobs' callbacks may go."""

    model_config = SettingsConfigDict(env_prefix="FLEETLINE_API_", extra="ignore")

    # Requests per second each API key may make, with bursts of up to `burst` (a token
    # bucket in Redis, shared by every API process); past it: 429 with Retry-After.
    rate_per_s: float = Field(default=20.0, gt=0)
    burst: int = Field(default=40, ge=1)

    # The hosts each tenant's `callback_url` may name ("*": every tenant not listed;
    # none: callbacks are refused), e.g. '{"acme": ["hooks.acme.com", "*.acme.io"]}'.
    # A pattern reaches public addresses only; a loopback, private or link-local address
    # only when its host (or host:port) is named exactly (shared/callback_hosts.py).
    callback_hosts: dict[str, list[str]] = Field(default_factory=dict)
    # Each tenant's secret its callbacks are signed with (JSON, tenant -> secret; or
    # FLEETLINE_API_WEBHOOK_SECRETS_FILE). A tenant without one cannot use callbacks.
    webhook_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    # Attempts per callback, the wait before the second (doubling after each failure, up
    # to the ceiling; a receiver's Retry-After is honoured up to it too), and each POST's
    # timeout. Six attempts from 10 s: the last about five minutes after the job's end.
    callback_attempts: int = Field(default=6, ge=1, le=20)
    callback_backoff_s: float = Field(default=10.0, gt=0)
    callback_backoff_max_s: float = Field(default=900.0, gt=0)
    callback_timeout_s: float = Field(default=10.0, gt=0, le=120)

    @field_validator("callback_hosts")
    @classmethod
    def _patterns(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for entries in value.values():
            for entry in entries:
                parse_pattern(entry)
        return value

    @field_validator("webhook_secrets")
    @classmethod
    def _long_enough(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for tenant, secret in value.items():
            if len(secret.get_secret_value()) < MIN_WEBHOOK_SECRET_LENGTH:
                raise ValueError(
                    f"the secret of {tenant!r} is shorter than {MIN_WEBHOOK_SECRET_LENGTH} "
                    "characters"
                )
        return value

    def callback_patterns(self, tenant: str) -> list[str]:
        """The allow-list of `tenant`'s callbacks (its own, else the "*" one)."""
        table = self.callback_hosts
        return table.get(tenant, table.get("*", []))

    def webhook_secret(self, tenant: str) -> str | None:
        """The secret `tenant`'s callbacks are signed with, if it has one."""
        secret = self.webhook_secrets.get(tenant)
        return secret.get_secret_value() if secret is not None else None

    def callback_refusal(self, tenant: str, url: str) -> str | None:
        """Why `tenant` may not call back `url` (None: it may, once its addresses pass)."""
        try:
            target = parse_callback_url(url)
        except ValueError as exc:
            return str(exc)
        if self.webhook_secret(tenant) is None:
            return f"tenant {tenant!r} has no webhook secret to sign callbacks with"
        return host_refusal(self.callback_patterns(tenant), target)
