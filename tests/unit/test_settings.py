"""Settings: valid defaults, env overrides that merge, and start-up errors naming the variable."""

from __future__ import annotations

import pytest

from fleetline.shared.errors import ConfigError
from fleetline.shared.fleet import DEFAULT_APP, load_fleet
from fleetline.shared.policy import WorkerPolicy
from fleetline.shared.settings import (
    FleetlineSettings,
    get_settings,
    load_settings,
    read_settings,
)

# The example fleet's agents (the default app).
# The example fleet's worker types: research_brief's agents, the pipeline's lookup tool,
# the debate's agents, and notify's agent and action tools.
AGENTS = (
    "extraction",
    "classification",
    "analysis",
    "synthesis",
    "entity_lookup",
    "debater",
    "judge",
    "notifier",
    "webhook",
    "email",
)
TIERS = ("cheap", "reasoning", "long_context")


def _refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    return str(info.value)


def test_defaults_are_valid_and_consistent() -> None:
    settings = load_settings()
    # No overrides in the environment; every agent of the fleet has a resolved policy.
    assert settings.workers == {}
    assert set(settings.policies) == set(AGENTS)
    assert set(settings.tiers) == set(TIERS)
    for tier, models in settings.tiers.items():
        assert models, tier
        assert all(m in settings.models for m in models)
    vt = settings.celery.visibility_timeout_s
    for policy in settings.policies.values():
        assert policy.time_limit_s + policy.retry_backoff_max_s < vt
        assert policy.soft_time_limit_s < policy.time_limit_s
    assert settings.default_latency_profile in settings.latency_profiles


def test_default_worker_tiers() -> None:
    tiers = {wt: policy.tier for wt, policy in load_settings().policies.items()}
    assert tiers == {
        "extraction": "cheap",
        "classification": "cheap",
        "analysis": "reasoning",
        "synthesis": "long_context",
        "entity_lookup": None,
        "debater": "cheap",
        "judge": "reasoning",
        "notifier": "cheap",
        "webhook": None,
        "email": None,
    }


def test_nested_override_merges_over_the_worker_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = load_settings()
    monkeypatch.setenv("FLEETLINE_WORKERS__EXTRACTION__CONCURRENCY", "64")
    settings = load_settings()
    extraction = settings.worker("extraction")
    assert extraction.concurrency == 64
    # Every other field of that worker type keeps its default ...
    expected = defaults.worker("extraction").model_copy(update={"concurrency": 64})
    assert extraction == expected
    # ... and the other worker types are untouched.
    for wt in AGENTS:
        if wt != "extraction":
            assert settings.worker(wt) == defaults.worker(wt)


def test_two_overrides_of_one_worker_type_both_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLINE_WORKERS__ANALYSIS__MAX_RETRIES", "7")
    monkeypatch.setenv("FLEETLINE_WORKERS__ANALYSIS__TIER", "cheap")
    analysis = load_settings().worker("analysis")
    assert (analysis.max_retries, analysis.tier) == (7, "cheap")
    assert analysis.fallback_tiers == ["cheap"]


def test_group_prefix_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S", "900")
    monkeypatch.setenv("FLEETLINE_LIMITS_MAX_DEADLINE_S", "120")
    monkeypatch.setenv("FLEETLINE_SIM_ERROR_RATE", "0.25")
    settings = load_settings()
    assert settings.celery.visibility_timeout_s == 900
    assert settings.limits.max_deadline_s == 120
    assert settings.sim.error_rate == 0.25


def test_a_tier_override_replaces_only_that_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings()
    monkeypatch.setenv("FLEETLINE_TIERS__CHEAP", '["gpt-4o-mini", "sim-small"]')
    settings = load_settings()
    assert settings.tiers["cheap"] == ["gpt-4o-mini", "sim-small"]
    assert settings.tiers["reasoning"] == defaults.tiers["reasoning"]
    assert settings.model_chain("extraction")[0] == "gpt-4o-mini"


def test_a_model_named_in_env_is_added_to_the_price_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "FLEETLINE_MODELS__MY-MODEL",
        '{"provider": "openai", "input_usd_per_mtok": 1, "output_usd_per_mtok": 2}',
    )
    monkeypatch.setenv("FLEETLINE_TIERS__REASONING", '["my-model"]')
    settings = load_settings()
    assert settings.models["my-model"].output_usd_per_mtok == 2
    assert "sim-small" in settings.models
    assert settings.model_chain("analysis") == ["my-model", "sim-small"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S", "soon"),
        ("FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S", "4"),
        ("FLEETLINE_CELERY__VISIBILITY_TIMEOUT_S", "4"),
        ("FLEETLINE_REDIS_MAX_CONNECTIONS", "9"),
        ("FLEETLINE_LIMITS_MAX_DEADLINE_S", "0"),
        ("FLEETLINE_SIM_ERROR_RATE", "1.5"),
        ("FLEETLINE_WORKERS__EXTRACTION__CONCURRENCY", "0"),
        ("FLEETLINE_WORKERS__CLASSIFICATION__POOL", "fibers"),
        ("FLEETLINE_WORKERS__ANALYSIS__TIER", "premium"),
    ],
)
def test_a_bad_value_names_its_environment_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    assert f"{name}:" in _refused(monkeypatch, **{name: value})


def test_soft_limit_above_hard_limit_names_the_worker_type(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = _refused(monkeypatch, FLEETLINE_WORKERS__ANALYSIS__SOFT_TIME_LIMIT_S="80")
    assert "FLEETLINE_WORKERS__ANALYSIS" in message
    assert "soft_time_limit_s" in message


def test_time_limit_plus_backoff_must_stay_below_visibility_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy = load_settings().worker("synthesis")
    longest = policy.time_limit_s + policy.retry_backoff_max_s
    monkeypatch.setenv("FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S", str(int(longest) + 1))
    assert load_settings().celery.visibility_timeout_s == int(longest) + 1

    # Equal is already too late: the message would be redelivered while it still runs.
    message = _refused(monkeypatch, FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S=str(int(longest)))
    assert "time_limit_s + retry_backoff_max_s" in message
    assert "FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S" in message


def test_a_longer_time_limit_for_one_worker_type_is_checked_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = _refused(
        monkeypatch,
        FLEETLINE_WORKERS__ANALYSIS__TIME_LIMIT_S="290",
    )
    assert "FLEETLINE_WORKERS__ANALYSIS" in message
    assert "time_limit_s + retry_backoff_max_s" in message


def test_unknown_model_in_a_tier_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _refused(monkeypatch, FLEETLINE_TIERS__LONG_CONTEXT='["gpt-9"]')
    assert "tiers.long_context" in message
    assert "'gpt-9'" in message


def test_empty_tier_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "tiers.cheap" in _refused(monkeypatch, FLEETLINE_TIERS__CHEAP="[]")


def test_unknown_default_latency_profile_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _refused(monkeypatch, FLEETLINE_DEFAULT_LATENCY_PROFILE="overnight")
    assert "default_latency_profile" in message


def test_latency_profile_phases_must_fit_its_total(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _refused(
        monkeypatch,
        FLEETLINE_LATENCY_PROFILES__FAST=(
            '{"total_s": 2, "planning_s": 0.5, "workers_s": 1.5, "synthesis_s": 0.5}'
        ),
    )
    assert "FLEETLINE_LATENCY_PROFILES__FAST" in message


def test_an_added_latency_profile_keeps_the_built_in_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "FLEETLINE_LATENCY_PROFILES__FAST",
        '{"total_s": 2, "planning_s": 0.2, "workers_s": 1.2, "synthesis_s": 0.5}',
    )
    profiles = load_settings().latency_profiles
    assert profiles["fast"].workers_share() == pytest.approx(0.7)
    assert {"interactive", "batch", "fast"} <= set(profiles)


def test_get_settings_reads_the_environment_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLINE_LIMITS_MAX_DEADLINE_S", "50")
    first = get_settings()
    monkeypatch.setenv("FLEETLINE_LIMITS_MAX_DEADLINE_S", "60")
    assert get_settings() is first
    assert first.limits.max_deadline_s == 50
    assert first.fleet is load_fleet(DEFAULT_APP)


def test_soft_limit_must_be_below_hard_limit_in_code() -> None:
    with pytest.raises(ValueError, match="soft_time_limit_s"):
        WorkerPolicy(tier="cheap", soft_time_limit_s=75, time_limit_s=75)


def test_model_chain_is_tier_then_fallbacks_without_repeats() -> None:
    settings = FleetlineSettings(
        tiers={"reasoning": ["sim-large", "sim-small"], "cheap": ["sim-small", "gpt-4o-mini"]}
    ).bind(load_fleet())
    assert settings.model_chain("analysis") == ["sim-large", "sim-small", "gpt-4o-mini"]


def test_a_tool_has_no_tier_and_an_empty_model_chain() -> None:
    from fleetline.shared.fleet import FleetDefinition

    fleet = FleetDefinition("tooling")

    @fleet.tool("lookup", timeout_s=2.0)
    def lookup(args: dict[str, object]) -> dict[str, object]:
        return {}

    settings = read_settings().bind(fleet)
    assert settings.worker("lookup").tier is None
    assert settings.worker("lookup").max_call_s == 2.0
    assert settings.model_chain("lookup") == []


def test_an_override_of_an_unknown_worker_type_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = _refused(monkeypatch, FLEETLINE_WORKERS__SUMMARISER__CONCURRENCY="4")
    assert "FLEETLINE_WORKERS__SUMMARISER" in message
    assert "'summariser'" in message
    # The known agents are listed, to spot the typo.
    assert all(agent in message for agent in AGENTS)


def test_unknown_worker_type_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"no agent or tool 'nope' \(known: analysis, "):
        load_settings().worker("nope")


def test_read_settings_is_not_bound_to_a_fleet() -> None:
    settings = read_settings()
    with pytest.raises(ConfigError, match="not bound to a fleet"):
        settings.fleet  # noqa: B018
    with pytest.raises(ConfigError, match="not bound"):
        settings.worker("extraction")


def test_binding_leaves_the_unbound_settings_alone() -> None:
    unbound = read_settings()
    bound = unbound.bind(load_fleet())
    assert bound.fleet.name == "research"
    with pytest.raises(ConfigError):
        unbound.fleet  # noqa: B018


def test_the_app_comes_from_the_argument_else_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings().fleet is load_fleet(DEFAULT_APP)
    assert load_settings().app is None
    monkeypatch.setenv("FLEETLINE_APP", DEFAULT_APP)
    assert load_settings().app == DEFAULT_APP
    assert "FLEETLINE_APP=nope:fleet" in _refused(monkeypatch, FLEETLINE_APP="nope:fleet")
    # An explicit app wins over the environment's.
    assert load_settings(DEFAULT_APP).fleet is load_fleet(DEFAULT_APP)


def test_a_fallback_tier_must_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _refused(monkeypatch, FLEETLINE_WORKERS__ANALYSIS__FALLBACK_TIERS='["premium"]')
    assert "FLEETLINE_WORKERS__ANALYSIS__FALLBACK_TIERS:" in message
    assert "'premium'" in message


def test_document_limits_are_not_settings_any_more() -> None:
    from fleetline.shared.settings import LimitsSettings

    assert not {"max_documents", "max_document_chars"} & set(LimitsSettings.model_fields)
