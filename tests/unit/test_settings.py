"""Settings: valid defaults, env overrides that merge, and start-up errors naming the variable."""

from __future__ import annotations

import pytest

from fleetline.shared.errors import ConfigError
from fleetline.shared.names import Tier, WorkerType
from fleetline.shared.settings import (
    FleetlineSettings,
    WorkerTypeSettings,
    get_settings,
    load_settings,
)


def _refused(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    return str(info.value)


def test_defaults_are_valid_and_consistent() -> None:
    settings = load_settings()
    assert set(settings.workers) == set(WorkerType)
    assert set(settings.tiers) == set(Tier)
    for tier, models in settings.tiers.items():
        assert models, tier
        assert all(m in settings.models for m in models)
    vt = settings.celery.visibility_timeout_s
    for policy in settings.workers.values():
        assert policy.time_limit_s + policy.retry_backoff_max_s < vt
        assert policy.soft_time_limit_s < policy.time_limit_s
    assert settings.default_latency_profile in settings.latency_profiles


def test_default_worker_tiers() -> None:
    tiers = {wt: policy.tier for wt, policy in load_settings().workers.items()}
    assert tiers == {
        WorkerType.EXTRACTION: Tier.CHEAP,
        WorkerType.CLASSIFICATION: Tier.CHEAP,
        WorkerType.ANALYSIS: Tier.REASONING,
        WorkerType.SYNTHESIS: Tier.LONG_CONTEXT,
    }


def test_nested_override_merges_over_the_worker_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = load_settings()
    monkeypatch.setenv("FLEETLINE_WORKERS__EXTRACTION__CONCURRENCY", "64")
    settings = load_settings()
    extraction = settings.worker(WorkerType.EXTRACTION)
    assert extraction.concurrency == 64
    # Every other field of that worker type keeps its default ...
    expected = defaults.worker(WorkerType.EXTRACTION).model_copy(update={"concurrency": 64})
    assert extraction == expected
    # ... and the other worker types are untouched.
    for wt in WorkerType:
        if wt is not WorkerType.EXTRACTION:
            assert settings.worker(wt) == defaults.worker(wt)


def test_two_overrides_of_one_worker_type_both_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLINE_WORKERS__ANALYSIS__MAX_RETRIES", "7")
    monkeypatch.setenv("FLEETLINE_WORKERS__ANALYSIS__TIER", "cheap")
    analysis = load_settings().worker(WorkerType.ANALYSIS)
    assert (analysis.max_retries, analysis.tier) == (7, Tier.CHEAP)
    assert analysis.fallback_tiers == [Tier.CHEAP]


def test_group_prefix_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S", "900")
    monkeypatch.setenv("FLEETLINE_LIMITS_MAX_DOCUMENTS", "12")
    monkeypatch.setenv("FLEETLINE_SIM_ERROR_RATE", "0.25")
    settings = load_settings()
    assert settings.celery.visibility_timeout_s == 900
    assert settings.limits.max_documents == 12
    assert settings.sim.error_rate == 0.25


def test_a_tier_override_replaces_only_that_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings()
    monkeypatch.setenv("FLEETLINE_TIERS__CHEAP", '["gpt-4o-mini", "sim-small"]')
    settings = load_settings()
    assert settings.tiers[Tier.CHEAP] == ["gpt-4o-mini", "sim-small"]
    assert settings.tiers[Tier.REASONING] == defaults.tiers[Tier.REASONING]
    assert settings.model_chain(WorkerType.EXTRACTION)[0] == "gpt-4o-mini"


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
    assert settings.model_chain(WorkerType.ANALYSIS) == ["my-model", "sim-small"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S", "soon"),
        ("FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S", "4"),
        ("FLEETLINE_CELERY__VISIBILITY_TIMEOUT_S", "4"),
        ("FLEETLINE_REDIS_MAX_CONNECTIONS", "9"),
        ("FLEETLINE_LIMITS_MAX_DOCUMENTS", "0"),
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
    policy = load_settings().worker(WorkerType.SYNTHESIS)
    longest = policy.time_limit_s + policy.retry_backoff_max_s
    monkeypatch.setenv("FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S", str(int(longest) + 1))
    assert load_settings().celery.visibility_timeout_s == int(longest) + 1

    # Equal is already too late: the message would be redelivered while it still runs.
    message = _refused(monkeypatch, FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S=str(int(longest)))
    assert "time_limit_s + retry_backoff_max_s" in message
    assert "visibility_timeout_s" in message


def test_a_longer_time_limit_for_one_worker_type_is_checked_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = _refused(
        monkeypatch,
        FLEETLINE_WORKERS__ANALYSIS__TIME_LIMIT_S="290",
    )
    assert "workers.analysis" in message


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
    monkeypatch.setenv("FLEETLINE_LIMITS_MAX_DOCUMENTS", "5")
    first = get_settings()
    monkeypatch.setenv("FLEETLINE_LIMITS_MAX_DOCUMENTS", "6")
    assert get_settings() is first
    assert first.limits.max_documents == 5


def test_soft_limit_must_be_below_hard_limit_in_code() -> None:
    with pytest.raises(ValueError, match="soft_time_limit_s"):
        WorkerTypeSettings(tier=Tier.CHEAP, soft_time_limit_s=75, time_limit_s=75)


def test_model_chain_is_tier_then_fallbacks_without_repeats() -> None:
    settings = FleetlineSettings(
        tiers={"reasoning": ["sim-large", "sim-small"], "cheap": ["sim-small", "gpt-4o-mini"]}
    )
    assert settings.model_chain(WorkerType.ANALYSIS) == ["sim-large", "sim-small", "gpt-4o-mini"]
