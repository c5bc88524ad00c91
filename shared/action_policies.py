"""The supervisor's policies: declarative rules an action is reviewed against before it runs.

Each rule looks at one proposed action (its type and arguments) in its context (the
tenant, the proposing agent, what its draft cost) and either passes it or gives a
violation: a score in [0, 1], a reason, and how to change the action to comply. A rule
either denies or sends to review:

    approved       no violation scores above the alert threshold (0.7 by default)
    blocked        a deny rule's violation does; the action never runs
    needs_review   a review rule's does (and no deny rule's): a person decides

Violations at or below the threshold are kept in the action log but change nothing.

    Match("no_refunds", "deny", type="webhook", args={"kind": "refund"},
          reason="refunds go through the billing service")
    AllowedHosts(["hooks.acme.com", "10.0.0.5:8080"])
    AmountLimit("review_above", "review", limit=100)
    PiiCheck()
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from fleetline.shared.callback_hosts import (
    Allowance,
    address_problem,
    allowance,
    parse_callback_url,
    parse_pattern,
)

Effect = Literal["deny", "review"]
DEFAULT_ALERT_THRESHOLD = 0.7


class Decision(StrEnum):
    """What the supervisor (or a reviewer) decided about an action."""

    APPROVED = "approved"
    BLOCKED = "blocked"
    NEEDS_REVIEW = "needs_review"
    REJECTED = "rejected"


@dataclass(frozen=True)
class ActionContext:
    """What a rule may look at besides the action itself."""

    tenant: str
    agent: str
    # What the draft that proposed the action cost.
    cost_usd: float = 0.0


@dataclass(frozen=True)
class Violation:
    """One rule's objection to one action."""

    policy: str
    score: float
    reason: str
    effect: Effect
    recommendation: str = ""

    def as_log(self) -> dict[str, Any]:
        """The violation as the action log shows it."""
        return {"policy": self.policy, "score": self.score, "reason": self.reason}


@dataclass(frozen=True)
class Rule:
    """A policy: its name, whether it denies or sends to review, and its violation's score.

    Subclasses say why an action breaks it (`reason`); None passes the action.
    """

    name: str
    effect: Effect
    score: float = 1.0
    recommendation: str = ""

    def reason(self, type_: str, args: Mapping[str, Any], ctx: ActionContext) -> str | None:
        raise NotImplementedError

    def advice(self, type_: str, args: Mapping[str, Any]) -> str:
        """How to change the action to comply (the rule's own recommendation by default)."""
        return self.recommendation

    def check(self, type_: str, args: Mapping[str, Any], ctx: ActionContext) -> Violation | None:
        found = self.reason(type_, args, ctx)
        if found is None:
            return None
        return Violation(self.name, self.score, found, self.effect, self.advice(type_, args))

    def describe(self) -> dict[str, Any]:
        """The rule as data: what its policy version is computed from."""
        described: dict[str, Any] = {"rule": type(self).__name__}
        for key, value in vars(self).items():
            described[key] = getattr(value, "__qualname__", value) if callable(value) else value
        return described


@dataclass(frozen=True)
class Match(Rule):
    """An action matched on its type, some of its arguments (equal values), its tenant,
    the cost of its draft (above `cost_above`) or a predicate: every condition given must
    hold for the rule to object."""

    type: str | None = None
    args: Mapping[str, Any] | None = None
    tenant: str | None = None
    cost_above: float | None = None
    where: Callable[[str, Mapping[str, Any]], bool] | None = None
    because: str = "matched a deny rule"

    def reason(self, type_: str, args: Mapping[str, Any], ctx: ActionContext) -> str | None:
        if self.type is not None and type_ != self.type:
            return None
        if self.args is not None and any(args.get(k) != v for k, v in self.args.items()):
            return None
        if self.tenant is not None and ctx.tenant != self.tenant:
            return None
        if self.cost_above is not None and ctx.cost_usd <= self.cost_above:
            return None
        if self.where is not None and not self.where(type_, args):
            return None
        return self.because


@dataclass(frozen=True)
class AllowedHosts(Rule):
    """Actions with a URL (`arg`) may reach only the allow-listed hosts (`host` or
    `host:port`; see shared/callback_hosts.py); a literal loopback, private or link-local
    address only when an entry names it exactly. A host's resolved addresses are checked
    again at delivery, where DNS is asked."""

    name: str = "allowed_hosts"
    effect: Effect = "deny"
    hosts: tuple[str, ...] = ()
    arg: str = "url"

    def __post_init__(self) -> None:
        for entry in self.hosts:
            parse_pattern(entry)  # ValueError naming the bad entry, at start-up

    def reason(self, type_: str, args: Mapping[str, Any], ctx: ActionContext) -> str | None:
        if self.arg not in args:
            return None
        url = args[self.arg]
        if not isinstance(url, str):
            return f"{self.arg}: not a URL"
        try:
            target = parse_callback_url(url)
        except ValueError as exc:
            return f"{self.arg}: {exc}"
        allowed = allowance(self.hosts, target)
        if allowed is Allowance.REFUSED:
            return f"host {target.host_header} is not on the supervisor's allow-list"
        literal = target.literal
        if allowed is Allowance.PUBLIC and literal is not None:
            problem = address_problem(literal)
            if problem is not None:
                return f"{problem} is reached only when the allow-list names it exactly"
        return None

    def advice(self, type_: str, args: Mapping[str, Any]) -> str:
        if self.recommendation:
            return self.recommendation
        if not self.hosts:
            return "no host is allow-listed: add one to FLEETLINE_SUPERVISOR_ALLOWED_HOSTS"
        return f"send it to an allow-listed host: {', '.join(self.hosts)}"


@dataclass(frozen=True)
class AmountLimit(Rule):
    """Actions whose amount (`arg`, a number) is above `limit`; an amount that is not a
    number always objects (a limit that cannot be checked is not met)."""

    limit: float = 0.0
    arg: str = "amount"

    def reason(self, type_: str, args: Mapping[str, Any], ctx: ActionContext) -> str | None:
        if self.arg not in args:
            return None
        amount = args[self.arg]
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            return f"{self.arg}: {amount!r} is not a number"
        if amount > self.limit:
            return f"{self.arg} {amount:g} is above {self.limit:g}"
        return None

    def advice(self, type_: str, args: Mapping[str, Any]) -> str:
        if self.recommendation:
            return self.recommendation
        return f"lower {self.arg} to at most {self.limit:g}, or split it into smaller actions"


def _luhn(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
_SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}\b")


def pii_found(text: str) -> list[str]:
    """The kinds of personal data `text` seems to hold (an email address, a card number
    that passes the Luhn check, a US social security number, an IBAN)."""
    found = []
    if _EMAIL.search(text):
        found.append("an email address")
    if any(_luhn(re.sub(r"\D", "", m.group())) for m in _CARD.finditer(text)):
        found.append("a card number")
    if _SSN.search(text):
        found.append("a social security number")
    if _IBAN.search(text):
        found.append("an IBAN")
    return found


@dataclass(frozen=True)
class PiiCheck(Rule):
    """Text arguments (`fields`) that seem to hold personal data."""

    name: str = "pii"
    effect: Effect = "review"
    score: float = 0.9
    fields: tuple[str, ...] = ("body", "subject", "text", "message")

    def reason(self, type_: str, args: Mapping[str, Any], ctx: ActionContext) -> str | None:
        hits = [
            f"{name} holds {kind}"
            for name in self.fields
            if isinstance(args.get(name), str)
            for kind in pii_found(args[name])
        ]
        return "; ".join(hits) or None

    def advice(self, type_: str, args: Mapping[str, Any]) -> str:
        return self.recommendation or "remove or mask the personal data in the text"


@dataclass(frozen=True)
class Review:
    """The supervisor's review of one action."""

    decision: Decision
    violations: tuple[Violation, ...] = ()
    recommendation: str = ""


@dataclass(frozen=True)
class Policies:
    """The rules an action is reviewed against, and the score above which one counts."""

    rules: tuple[Rule, ...] = ()
    alert_threshold: float = DEFAULT_ALERT_THRESHOLD
    # Extra entries of the policy version (what the rules' settings came from).
    extra: Mapping[str, Any] = field(default_factory=dict)

    def review(self, type_: str, args: Mapping[str, Any], ctx: ActionContext) -> Review:
        """Every rule's violation of the action, and the decision they make."""
        violations = tuple(v for r in self.rules if (v := r.check(type_, args, ctx)) is not None)
        counted = [v for v in violations if v.score > self.alert_threshold]
        denied = [v for v in counted if v.effect == "deny"]
        if denied:
            return Review(Decision.BLOCKED, violations, _advice(denied))
        if counted:
            return Review(Decision.NEEDS_REVIEW, violations, _advice(counted))
        return Review(Decision.APPROVED, violations)

    def version(self) -> str:
        """A short digest of the rules and the threshold: which policies decided."""
        described = {
            "threshold": self.alert_threshold,
            "rules": [r.describe() for r in self.rules],
            **self.extra,
        }
        digest = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode())
        return digest.hexdigest()[:12]

    def plus(self, rules: Sequence[Rule]) -> Policies:
        """These policies with more rules after them."""
        return Policies((*self.rules, *rules), self.alert_threshold, self.extra)


def _advice(violations: list[Violation]) -> str:
    return "; ".join(dict.fromkeys(v.recommendation for v in violations if v.recommendation))
