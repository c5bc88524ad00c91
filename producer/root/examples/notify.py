"""The example supervised job: `notify`, a message drafted for each target and delivered once.

Per target (a webhook URL or an email address, each with an amount), one `notifier`
draft on the cheap tier writes the notification and proposes its delivery as an action.
The supervisor reviews every action against the fleet's policies from settings
(FLEETLINE_SUPERVISOR_ALLOWED_HOSTS, _REVIEW_ABOVE, _DENY_ABOVE, personal data in the
text): approved ones are delivered once (`webhook`, `email`), blocked ones never, and
those that need review wait for `fleetline approve` / `reject`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fleetline import Agent, Plan, Tool, supervised
from fleetline.examples.notify_delivery import post_webhook, send_email
from fleetline.examples.research import fleet
from fleetline.shared.callback_hosts import parse_callback_url

MAX_TARGETS = 50
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Target(BaseModel):
    """One recipient: a webhook `url` or an `email` address, and the amount it is about."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    email: str | None = None
    amount: float = Field(default=0, ge=0, le=1e12)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_callback_url(value)  # ValueError: why it is not a webhook URL
        return value

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError("not an email address")
        return value

    @model_validator(mode="after")
    def _one_of(self) -> Target:
        if (self.url is None) == (self.email is None):
            raise ValueError("give exactly one of url and email")
        return self


class NotifyInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    message: str = Field(min_length=1, max_length=5_000)
    targets: list[Target] = Field(min_length=1, max_length=MAX_TARGETS)


class DraftedAction(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["webhook", "email"]
    args: dict[str, Any]


class Notification(BaseModel):
    """A drafted notification and the action that delivers it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    summary: str = Field(min_length=1, max_length=500)
    actions: list[DraftedAction] = Field(max_length=1)


def draft_sim(instruction: str, document: str) -> dict[str, Any]:
    """The notifier on the offline sim: the message as it is, to the target it names."""
    request = json.loads(document[document.index("{") :])
    target, message = request["target"], request["message"]
    args: dict[str, Any] = {"body": message, "amount": target.get("amount", 0)}
    if target.get("url"):
        action = {"type": "webhook", "args": {"url": target["url"], **args}}
    else:
        action = {"type": "email", "args": {"to": target["email"], "subject": "Notice", **args}}
    return {"summary": message[:500], "actions": [action]}


def declare_drafter(on: Any, sim: Any = draft_sim) -> Agent:
    """The notifier agent, on the fleet `on`."""
    agent: Agent = on.agent(
        "notifier",
        tier="cheap",
        output=Notification,
        prompt=(
            "Task: notify. Write the notification of the message for the target, and "
            "propose one action that delivers it: `webhook` (args: url, body, amount) for "
            "a URL, `email` (args: to, subject, body, amount) for an address."
        ),
        sim=sim,
        max_output_tokens=400,
    )
    return agent


def notify_plan(inp: NotifyInput, drafter: Agent, tools: list[Tool]) -> Plan:
    """One draft per target; the supervisor reviews what each proposes."""
    drafts = [
        drafter.step(
            id=f"target-{n}",
            text="Notify:\n"
            + json.dumps({"message": inp.message, "target": t.model_dump(exclude_none=True)}),
        )
        for n, t in enumerate(inp.targets, 1)
    ]
    return supervised(drafts, tools=tools)


notifier = declare_drafter(fleet)
# At most one attempt in flight per action; retries resend under the same key.
webhook = fleet.tool("webhook", timeout_s=15, max_retries=3)(post_webhook)
email = fleet.tool("email", timeout_s=15, max_retries=3)(send_email)


@fleet.job("notify", input=NotifyInput)
def notify(inp: NotifyInput) -> Plan:
    """A notification per target, each delivered once if the supervisor approves."""
    return notify_plan(inp, notifier, [webhook, email])
