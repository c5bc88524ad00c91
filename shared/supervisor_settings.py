"""The supervisor's settings (FLEETLINE_SUPERVISOR_*): the fleet's own action policies, how
long a review may wait, and where the example action tools deliver."""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetline.shared.action_policies import (
    DEFAULT_ALERT_THRESHOLD,
    AllowedHosts,
    AmountLimit,
    PiiCheck,
    Policies,
    Rule,
)
from fleetline.shared.callback_hosts import parse_pattern


class SupervisorSettings(BaseSettings):
    """Policies every supervised action of the fleet is reviewed against, on top of the
    rules its job kind's code gives."""

    model_config = SettingsConfigDict(env_prefix="FLEETLINE_SUPERVISOR_", extra="ignore")

    # Hosts an action's `url` may reach (JSON list of `host` or `host:port`); any other is
    # blocked. Empty: every action with a URL is blocked (nothing leaves by default).
    allowed_hosts: list[str] = Field(default_factory=list)
    # An action's `amount` above review_above waits for a reviewer; above deny_above it is
    # blocked. None: no such limit.
    review_above: float | None = Field(default=None, ge=0)
    deny_above: float | None = Field(default=None, ge=0)
    # How long a `needs_review` action waits for `fleetline approve`/`reject` before it
    # counts as rejected; a supervised job's deadline must be longer.
    review_timeout_s: float = Field(default=600.0, gt=0)
    # A violation counts when its score is above this.
    alert_threshold: float = Field(default=DEFAULT_ALERT_THRESHOLD, ge=0, le=1)
    # Text arguments that seem to hold personal data go to review.
    pii_check: bool = True
    # The example `webhook` tool: its signing secret (HMAC-SHA256 of `timestamp.body`)
    # and how long one POST may take.
    webhook_secret: SecretStr | None = None
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
    # The example `email` tool's SMTP server.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = Field(default=10.0, gt=0, le=120)
    mail_from: str = "fleetline@localhost"

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _json_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                raise ValueError('must be a JSON list, e.g. ["hooks.acme.com:443"]') from None
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                parse_pattern(entry)
            except ValueError:
                raise ValueError(f"{entry!r} is not a host or host:port") from None
        return value

    @model_validator(mode="after")
    def _limits_in_order(self) -> SupervisorSettings:
        if (
            self.review_above is not None
            and self.deny_above is not None
            and self.review_above > self.deny_above
        ):
            raise ValueError("review_above must not be above deny_above")
        return self

    def timeout_for(self, own: float | None) -> float:
        """How long an action waits for review: its plan's own timeout, else this one."""
        return own if own is not None else self.review_timeout_s

    def rules(self) -> list[Rule]:
        """The rules these settings make."""
        made: list[Rule] = [AllowedHosts(hosts=tuple(self.allowed_hosts))]
        if self.deny_above is not None:
            made.append(AmountLimit("deny_above", "deny", limit=self.deny_above))
        if self.review_above is not None:
            made.append(
                AmountLimit(
                    "review_above",
                    "review",
                    limit=self.review_above,
                    recommendation=f"lower amount to at most {self.review_above:g} to skip review",
                )
            )
        if self.pii_check:
            made.append(PiiCheck())
        return made

    def policies(self, code_rules: tuple[Rule, ...] = ()) -> Policies:
        """The policies of a supervised job: its kind's rules, then these settings'."""
        return Policies((*code_rules, *self.rules()), self.alert_threshold)
