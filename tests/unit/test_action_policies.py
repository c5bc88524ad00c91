"""The supervisor's policies, as pure code: rules, scores, decisions, the settings' rules."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from fleetline import Fleet, PlanError
from fleetline.shared.action_policies import (
    ActionContext,
    AllowedHosts,
    AmountLimit,
    Decision,
    Match,
    PiiCheck,
    Policies,
    pii_found,
)
from fleetline.shared.errors import ConfigError
from fleetline.shared.fleet.supervised import action_id, idempotency_key, proposed, supervised
from fleetline.shared.supervisor_settings import SupervisorSettings

CTX = ActionContext(tenant="acme", agent="drafter", cost_usd=0.01)


def _review(policies: Policies, type_: str = "webhook", **args: Any) -> tuple[str, list[str]]:
    review = policies.review(type_, args, CTX)
    return review.decision.value, [v.policy for v in review.violations]


def test_an_action_no_rule_objects_to_is_approved() -> None:
    policies = Policies(
        (AllowedHosts(hosts=("hooks.acme.com",)), AmountLimit("cap", "deny", 1, limit=10))
    )
    assert _review(policies, url="https://hooks.acme.com/x", amount=5) == ("approved", [])


def test_a_deny_rule_blocks_with_its_reason_and_a_recommendation() -> None:
    policies = Policies((AllowedHosts(hosts=("hooks.acme.com",)),))
    review = policies.review("webhook", {"url": "https://evil.example/x"}, CTX)
    assert review.decision is Decision.BLOCKED
    (violation,) = review.violations
    assert violation.policy == "allowed_hosts" and violation.score == 1.0
    assert "evil.example" in violation.reason
    assert "hooks.acme.com" in review.recommendation


def test_a_review_rule_sends_to_review_and_deny_beats_review() -> None:
    policies = Policies(
        (
            AmountLimit("review_above", "review", limit=100),
            AmountLimit("deny_above", "deny", limit=1000),
        )
    )
    assert _review(policies, amount=500)[0] == "needs_review"
    assert _review(policies, amount=5000) == ("blocked", ["review_above", "deny_above"])
    assert "at most 1000" in policies.review("webhook", {"amount": 5000}, CTX).recommendation


def test_violations_at_or_below_the_threshold_are_logged_but_do_not_count() -> None:
    low = Match("odd", "deny", 0.7, type="webhook", because="looks odd")
    review = Policies((low,), alert_threshold=0.7).review("webhook", {}, CTX)
    assert review.decision is Decision.APPROVED
    assert [v.as_log() for v in review.violations] == [
        {"policy": "odd", "score": 0.7, "reason": "looks odd"}
    ]


def test_match_holds_only_when_every_condition_does() -> None:
    rule = Match("refunds", "deny", type="webhook", args={"kind": "refund"}, tenant="acme")
    policies = Policies((rule,))
    assert _review(policies, kind="refund")[0] == "blocked"
    assert _review(policies, kind="notice")[0] == "approved"
    assert _review(policies, "email", kind="refund")[0] == "approved"
    costly = Policies((Match("costly", "review", cost_above=0.005),))
    assert _review(costly)[0] == "needs_review"


def test_amounts_that_are_not_numbers_are_not_under_a_limit() -> None:
    policies = Policies((AmountLimit("cap", "deny", limit=10),))
    assert _review(policies, amount="5")[0] == "blocked"
    assert _review(policies, amount=True)[0] == "blocked"
    assert _review(policies)[0] == "approved"


@pytest.mark.parametrize(
    ("url", "allowed", "decision"),
    [
        ("https://hooks.acme.com/a", ["hooks.acme.com"], "approved"),
        ("https://hooks.acme.com:8443/a", ["hooks.acme.com:443"], "blocked"),
        ("http://127.0.0.1:9000/a", ["127.0.0.1:9000"], "approved"),
        ("http://127.0.0.1:9000/a", ["*"], "blocked"),
        ("http://10.1.2.3/a", ["*"], "blocked"),
        ("ftp://hooks.acme.com/a", ["hooks.acme.com"], "blocked"),
        ("https://user:pw@hooks.acme.com/a", ["hooks.acme.com"], "blocked"),
        ("https://anything.example/a", [], "blocked"),
    ],
)
def test_hosts_off_the_allow_list_are_blocked(url: str, allowed: list[str], decision: str) -> None:
    assert _review(Policies((AllowedHosts(hosts=tuple(allowed)),)), url=url)[0] == decision


def test_pii_in_text_goes_to_review() -> None:
    assert pii_found("card 4111 1111 1111 1111 please") == ["a card number"]
    assert pii_found("order 1234 5678 9012 3456") == []  # fails the Luhn check
    assert pii_found("write to ann@example.com, ssn 123-45-6789") == [
        "an email address",
        "a social security number",
    ]
    policies = Policies((PiiCheck(),))
    decision, hits = _review(policies, body="SSN 123-45-6789")
    assert (decision, hits) == ("needs_review", ["pii"])
    assert _review(policies, to="ann@example.com", body="hello")[0] == "approved"


def test_the_policy_version_changes_with_the_rules() -> None:
    one = Policies((AmountLimit("cap", "deny", limit=10),))
    assert one.version() == Policies((AmountLimit("cap", "deny", limit=10),)).version()
    assert one.version() != Policies((AmountLimit("cap", "deny", limit=11),)).version()
    assert one.version() != Policies(one.rules, alert_threshold=0.5).version()


def test_settings_make_the_fleet_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLINE_SUPERVISOR_ALLOWED_HOSTS", '["hooks.acme.com", "10.0.0.5:80"]')
    monkeypatch.setenv("FLEETLINE_SUPERVISOR_REVIEW_ABOVE", "100")
    monkeypatch.setenv("FLEETLINE_SUPERVISOR_DENY_ABOVE", "1000")
    settings = SupervisorSettings()
    policies = settings.policies()
    assert [r.name for r in policies.rules] == [
        "allowed_hosts",
        "deny_above",
        "review_above",
        "pii",
    ]
    assert _review(policies, url="http://10.0.0.5/x", amount=50)[0] == "approved"
    assert _review(policies, url="http://10.0.0.5/x", amount=500)[0] == "needs_review"
    assert _review(policies, url="http://10.0.0.6/x", amount=50)[0] == "blocked"


def test_settings_refuse_limits_out_of_order_and_bad_hosts() -> None:
    with pytest.raises(ValidationError, match="review_above"):
        SupervisorSettings(review_above=100, deny_above=10)
    with pytest.raises(ValidationError, match="not a host"):
        SupervisorSettings(allowed_hosts=["http://x/"])


class _Draft(BaseModel):
    text: str


def test_the_supervised_shape_checks_its_arguments() -> None:
    fleet = Fleet("shape")
    drafter = fleet.agent("drafter", tier="cheap", output=_Draft, prompt="Draft.")

    @fleet.tool("hook")
    def hook(args: dict[str, Any]) -> dict[str, Any]:
        return {}

    plan = supervised([drafter.step("t1")], tools=[hook])
    assert plan.shape == "supervised" and plan.supervision is not None
    assert plan.supervision.tools == {"hook": hook}
    with pytest.raises(PlanError, match="tools"):
        supervised([drafter.step("t1")], tools=[])
    with pytest.raises(PlanError, match="agent steps"):
        supervised([hook.step("t1")], tools=[hook])
    with pytest.raises(PlanError, match="review_timeout_s"):
        supervised([drafter.step("t1")], tools=[hook], review_timeout_s=0)
    stranger = Fleet("other")

    @stranger.tool("hook")
    def other_hook(args: dict[str, Any]) -> dict[str, Any]:
        return {}

    @fleet.job("notify", input=_Draft)
    def notify(inp: _Draft) -> Any:
        return supervised([drafter.step("t1")], tools=[other_hook])

    with pytest.raises(ConfigError, match="action tool 'hook'"):
        fleet.plan("notify", {"text": "x"})


def test_proposed_actions_are_read_whole_or_not_at_all() -> None:
    ok = {"actions": [{"type": "webhook", "args": {"url": "https://x/"}}]}
    actions, problem = proposed(ok)
    assert problem is None and actions[0].type == "webhook"
    assert proposed({"text": "no actions"}) == ([], None)
    actions, problem = proposed({"actions": [{"type": "webhook"}, {"type": "Bad Type"}]})
    assert actions == [] and problem is not None and "1.type" in problem
    assert proposed({"actions": "send"})[1] == "actions: not a list"


def test_ids_and_keys_are_stable() -> None:
    assert action_id("t1", 0) == "t1-a1"
    key = idempotency_key("job", "t1", "t1-a1")
    assert key == idempotency_key("job", "t1", "t1-a1")
    assert key != idempotency_key("job2", "t1", "t1-a1")
