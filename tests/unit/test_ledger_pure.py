"""The ledger's, kill switches' and cache's plain parts: windows, limits, keys, replies."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from fleetline.shared import keys
from fleetline.shared.cache import Hit, Lease, Wait, cache_key, normalise_input, parse_lookup
from fleetline.shared.killswitch import applicable_keys, check_scope
from fleetline.shared.ledger import (
    Scope,
    ScopeKind,
    SpendSettings,
    Window,
    parse_reserve,
    plan_counters,
    scopes_for,
    window_bounds,
)

NOW = datetime(2026, 11, 25, 22, 59, 30, tzinfo=UTC).timestamp()


def test_windows_are_calendar_aligned_utc_buckets() -> None:
    bucket, start, end = window_bounds(Window.HOUR, NOW)
    assert bucket == "2026112522"
    assert end - start == 3600
    assert datetime.fromtimestamp(end, UTC) == datetime(2026, 11, 25, 23, tzinfo=UTC)
    bucket, start, end = window_bounds(Window.DAY, NOW)
    assert bucket == "20261125"
    assert datetime.fromtimestamp(end, UTC) == datetime(2026, 11, 26, tzinfo=UTC)


def test_spend_settings_read_limits_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLINE_SPEND_HOURLY_USD", "5")
    monkeypatch.setenv("FLEETLINE_SPEND_DAILY_USD", "50")
    monkeypatch.setenv("FLEETLINE_SPEND_TENANT_DAILY_USD", '{"acme": 20, "*": 2}')
    monkeypatch.setenv("FLEETLINE_SPEND_WORKER_TYPE_HOURLY_USD", '{"analysis": 1.5}')
    limits = SpendSettings()
    assert limits.limit(ScopeKind.FLEET, "", Window.HOUR) == 5
    assert limits.limit(ScopeKind.FLEET, "", Window.DAY) == 50
    assert limits.limit(ScopeKind.TENANT, "acme", Window.DAY) == 20
    assert limits.limit(ScopeKind.TENANT, "other", Window.DAY) == 2
    assert limits.limit(ScopeKind.TENANT, "acme", Window.HOUR) is None
    assert limits.limit(ScopeKind.WORKER_TYPE, "analysis", Window.HOUR) == 1.5
    assert limits.limit(ScopeKind.WORKER_TYPE, "extraction", Window.HOUR) is None


def test_negative_limits_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLINE_SPEND_TENANT_HOURLY_USD", '{"acme": -1}')
    with pytest.raises(ValidationError):
        SpendSettings()


def test_a_call_is_counted_against_job_tenant_worker_type_and_fleet() -> None:
    limits = SpendSettings(daily_usd=10, tenant_hourly_usd={"acme": 1})
    scopes = scopes_for(
        limits,
        job_id="j1",
        tenant="acme",
        worker_type="analysis",
        job_budget_usd=0.5,
        job_budget_tokens=1000,
    )
    assert [s.label for s in scopes] == ["job:j1", "tenant:acme", "worker_type:analysis", "fleet"]
    counter_keys, ttls, counters = plan_counters(scopes, "sim-large", NOW)
    assert counter_keys == [
        keys.spend_job("j1"),
        keys.spend_window("h", "2026112522"),
        keys.spend_window("d", "20261125"),
    ]
    # Windows expire just after they end; the job counter lives for the job's lifetime.
    assert ttls == [keys.SPEND_JOB_TTL_S, 30 + keys.SPEND_WINDOW_GRACE_S, 3630 + 3600]
    # Each counter ends with whether the call's hold is counted there: where a limit reads
    # it, and the fleet's.
    assert counters[0] == [3, "job:j1", 500_000_000, 1000, "lifetime", 1]
    assert [4, "tenant:acme", 1_000_000_000, -1, "hour", 1] in counters
    assert [4, "worker_type:analysis", -1, -1, "hour", 0] in counters
    assert [5, "fleet", 10_000_000_000, -1, "day", 1] in counters
    assert [5, "model:sim-large", -1, -1, "day", 0] in counters
    # A job counts in its own counter only, never in the windows.
    assert len(counters) == 1 + 2 * (3 + 1)


def test_a_refusal_names_the_limit_and_its_headroom() -> None:
    reply = [0, b"tenant:acme", b"day", b"usd", 1_000_000_000, 700_000_000, 250_000_000, 10**8]
    reservation = parse_reserve(reply)
    assert not reservation.ok
    refusal = reservation.refusal
    assert refusal is not None
    assert (refusal.scope, refusal.window, refusal.metric) == ("tenant:acme", "day", "usd")
    assert refusal.headroom == pytest.approx(0.05)
    assert "tenant:acme day usd limit 1 reached: headroom 0.05" in str(refusal)


def test_a_hold_is_spent_only_by_the_delivery_that_took_it() -> None:
    assert parse_reserve([2, b"reserved", b"d1"], "d1").ok
    # Another delivery's hold: that one may have called on it already.
    taken = parse_reserve([2, b"reserved", b"d1"], "d2")
    assert (taken.ok, taken.duplicate, taken.state) == (False, True, "reserved")
    settled = parse_reserve([2, b"settled", b"d1"], "d1")
    assert not settled.ok
    assert settled.duplicate


def test_kill_switch_scopes_and_the_keys_a_call_checks() -> None:
    assert check_scope("tenant:acme") == "tenant:acme"
    with pytest.raises(ValueError, match="scope"):
        check_scope("job:j1")
    assert applicable_keys("acme", None) == [
        keys.kill_switch("fleet", "d"),
        keys.kill_switch("fleet", "h"),
        keys.kill_switch("tenant:acme", "d"),
        keys.kill_switch("tenant:acme", "h"),
    ]
    assert len(applicable_keys("acme", "analysis")) == 6


def test_cache_keys_ignore_formatting_and_separate_tenants() -> None:
    assert normalise_input("  a\n\tb   c ") == "a b c"
    a = cache_key("extraction", "sim-small", "v1", "Acme  grew.\n", "a")
    assert a == cache_key("extraction", "sim-small", "v1", " Acme grew.", "a")
    assert a != cache_key("extraction", "sim-small", "v1", "Acme grew.", "b")
    assert a != cache_key("extraction", "sim-small", "v2", "Acme grew.", "a")
    assert cache_key("x", "m", "v1", "t", "a", shared=True) == cache_key(
        "x", "m", "v1", "t", "b", shared=True
    )


def test_lookup_replies() -> None:
    hit = parse_lookup([1, b'{"output": {"n": 1}, "cost_usd": 0.02, "model": "m"}'])
    assert hit == Hit(output={"n": 1}, cost_usd=0.02, model="m")
    assert parse_lookup([2, b"tok"]) == Lease("tok")
    assert parse_lookup([3, 1500]) == Wait(1500)


def test_scope_labels() -> None:
    assert Scope(ScopeKind.FLEET).label == "fleet"
    assert Scope(ScopeKind.WORKER_TYPE, "analysis").label == "worker_type:analysis"


def test_a_plan_is_the_callers_own_and_follows_the_clock() -> None:
    scopes = [Scope(ScopeKind.JOB, "a"), Scope(ScopeKind.JOB, "b"), Scope(ScopeKind.FLEET)]
    counter_keys, ttls, counters = plan_counters(scopes, "", NOW, job_ttl_s=77)
    assert counter_keys[:2] == [keys.spend_job("a"), keys.spend_job("b")]
    assert ttls[:2] == [77, 77]
    assert [c[0] for c in counters[:2]] == [3, 4]
    fleet_hour = counters[2][5]
    counters[0][5] = counters[2][5] = 9  # changing one plan changes no later one
    again_keys, again_ttls, again = plan_counters(scopes, "", NOW + 20, job_ttl_s=77)
    assert again[0][5] == 0 and again[2][5] == fleet_hour == 1
    assert again_keys == counter_keys
    assert again_ttls[2] == ttls[2] - 20, "the hour's TTL counts down"
    next_hour = plan_counters(scopes, "", NOW + 3600)[0]
    assert next_hour[2] == keys.spend_window("h", "2026112523")
