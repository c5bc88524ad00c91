"""Circuit breakers without Redis: the pure rules, the settings, the in-memory breakers with
a hand-driven clock, and pybreaker's API on top of them."""

from __future__ import annotations

from typing import Any

import pybreaker
import pytest
import redis
from pydantic import ValidationError

from fleetline.shared.breakers import (
    BreakerOpen,
    BreakerSettings,
    BreakerState,
    FleetBreaker,
    MemoryBreakers,
    Permit,
    RedisBreakers,
    Result,
    Transition,
    breaker_name,
    check_name,
)
from fleetline.shared.breakers.model import (
    build_snapshot,
    derive_state,
    parse_permit,
    parse_recorded,
    trips,
    window_counts,
)
from fleetline.shared.errors import ModelBadRequest, ProviderServerError

NAME = "extraction:sim-small"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def small(**overrides: Any) -> BreakerSettings:
    values: dict[str, Any] = {
        "window_s": 10,
        "buckets": 10,
        "min_calls": 4,
        "failure_rate": 0.5,
        "reset_timeout_s": 5,
        "probe_timeout_s": 3,
    }
    return BreakerSettings(**{**values, **overrides})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breakers(clock: Clock) -> MemoryBreakers:
    return MemoryBreakers(small(), clock)


def open_it(breakers: MemoryBreakers, name: str = NAME) -> None:
    for _ in range(breakers.settings.min_calls):
        breakers.record_failure(name)
    assert breakers.snapshot(name).state is BreakerState.OPEN


# --- pure rules -------------------------------------------------------------------------


def test_names() -> None:
    assert breaker_name("extraction", "sim-small") == NAME
    assert check_name("analysis:openai/gpt-4o.mini") == "analysis:openai/gpt-4o.mini"
    for bad in ["", "a b:c", "x:{y}", "x:", ":y", "x" * 201]:
        with pytest.raises(ValueError, match="invalid breaker name"):
            check_name(bad)


def test_window_counts_only_buckets_inside_the_window() -> None:
    fields = {"t0": "100", "c0": "3", "f0": "2", "t1": "91", "c1": "5", "f1": "5"}
    assert window_counts(fields, bucket=100, buckets=10) == (8, 7)  # buckets 91..100
    assert window_counts(fields, bucket=99, buckets=10) == (5, 5)  # 100 is in the future
    assert window_counts(fields, bucket=101, buckets=10) == (3, 2)  # 91 has slid out
    assert window_counts(fields, bucket=95, buckets=10) == (5, 5)
    assert window_counts({}, bucket=1, buckets=10) == (0, 0)


def test_trips_needs_min_calls_and_the_rate() -> None:
    assert not trips(calls=9, failures=9, min_calls=10, failure_rate=0.5)
    assert trips(calls=10, failures=5, min_calls=10, failure_rate=0.5)
    assert not trips(calls=10, failures=4, min_calls=10, failure_rate=0.5)
    assert trips(calls=1, failures=1, min_calls=1, failure_rate=1.0)


def test_derive_state() -> None:
    assert derive_state(None, None, 10) is BreakerState.CLOSED
    assert derive_state("closed", 5, 10) is BreakerState.CLOSED
    assert derive_state("open", 11, 10) is BreakerState.OPEN
    assert derive_state("open", 10, 10) is BreakerState.HALF_OPEN


def test_replies_parse_from_bytes_and_str() -> None:
    for reply in ([b"half-open", 1, 1, 0, b"tok"], ["half-open", 1, 1, 0, "tok"]):
        permit = parse_permit(NAME, reply)
        assert permit == Permit(NAME, BreakerState.HALF_OPEN, True, True, "tok", 0.0)
    assert parse_permit(NAME, [b"open", 0, 0, 1500, b""]).retry_after_s == 1.5
    recorded = parse_recorded(NAME, [b"open", b"opened", 10, 6])
    assert (recorded.state, recorded.transition, recorded.calls) == (
        BreakerState.OPEN,
        Transition.OPENED,
        10,
    )
    assert parse_recorded(NAME, ["closed", "", 3, 1]).transition is None


def test_snapshot_from_stored_fields() -> None:
    s = small()
    record = {"state": "open", "opened_at": "1000000", "half_open_at": "1005000", "trips": "2"}
    window = {"t0": "1000", "c0": "4", "f0": "3"}  # bucket 1000 = 1_000_000 ms / 1000 ms
    snap = build_snapshot(NAME, record, window, -2, 1_002_000, s)
    assert snap.state is BreakerState.OPEN
    assert (snap.calls, snap.failures, snap.failure_rate) == (4, 3, 0.75)
    assert snap.opened_at == 1000.0
    assert snap.half_open_in_s == 3.0
    assert snap.trips == 2
    half = build_snapshot(NAME, record, window, 1200, 1_006_000, s)
    assert half.state is BreakerState.HALF_OPEN
    assert half.half_open_in_s == 0.0
    assert half.probe_in_flight
    closed = build_snapshot(NAME, {}, {}, -2, 1_006_000, s)
    assert closed.state is BreakerState.CLOSED
    assert closed.half_open_in_s is None and closed.opened_at is None


# --- settings ---------------------------------------------------------------------------


def test_settings_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    s = BreakerSettings()
    assert (s.window_s, s.min_calls, s.failure_rate, s.reset_timeout_s) == (30, 10, 0.5, 30)
    assert s.on_redis_down == "fail_open" and s.fail_open
    assert s.bucket_ms == 1000
    assert s.socket_timeout_s <= 0.5 and s.connect_timeout_s <= 0.5
    monkeypatch.setenv("FLEETLINE_BREAKER_ON_REDIS_DOWN", "fail_closed")
    monkeypatch.setenv("FLEETLINE_BREAKER_MIN_CALLS", "20")
    s = BreakerSettings()
    assert not s.fail_open and s.min_calls == 20


@pytest.mark.parametrize(
    "values",
    [
        {"on_redis_down": "maybe"},
        {"failure_rate": 0},
        {"failure_rate": 1.5},
        {"window_s": 0.01, "buckets": 100},
        {"reset_timeout_s": 86_400},
        {"socket_timeout_s": 5},
    ],
)
def test_settings_refuse_bad_values(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        BreakerSettings(**values)


# --- the rules, in memory ---------------------------------------------------------------


def test_opens_on_the_failure_rate_once_min_calls_are_in(breakers: MemoryBreakers) -> None:
    breakers.record_success(NAME)
    breakers.record_failure(NAME)
    assert breakers.record_failure(NAME).transition is None  # 3 calls < min_calls 4
    recorded = breakers.record_success(NAME)  # 4 calls, 2 failures, but a success
    assert recorded.state is BreakerState.CLOSED
    recorded = breakers.record_failure(NAME)  # 5 calls, 3 failures: 60 %
    assert (recorded.transition, recorded.calls, recorded.failures) == (Transition.OPENED, 5, 3)
    permit = breakers.allow(NAME)
    assert not permit.allowed and permit.state is BreakerState.OPEN
    assert permit.retry_after_s == 5.0


def test_a_low_failure_rate_keeps_it_closed(breakers: MemoryBreakers) -> None:
    for _ in range(20):
        breakers.record_success(NAME)
    for _ in range(19):
        assert breakers.record_failure(NAME).state is BreakerState.CLOSED
    assert breakers.snapshot(NAME).failure_rate == pytest.approx(19 / 39)


def test_failures_slide_out_of_the_window(breakers: MemoryBreakers, clock: Clock) -> None:
    for _ in range(3):
        breakers.record_failure(NAME)
    clock.advance(10.5)
    recorded = breakers.record_failure(NAME)
    assert (recorded.state, recorded.calls, recorded.failures) == (BreakerState.CLOSED, 1, 1)


def test_half_open_lets_one_probe_through(breakers: MemoryBreakers, clock: Clock) -> None:
    open_it(breakers)
    clock.advance(5)
    probe = breakers.allow(NAME)
    assert probe.allowed and probe.is_probe and probe.state is BreakerState.HALF_OPEN
    others = [breakers.allow(NAME) for _ in range(5)]
    assert not any(p.allowed for p in others)
    assert breakers.record(NAME, Result.SUCCESS, probe).transition is Transition.CLOSED
    snap = breakers.snapshot(NAME)
    assert (snap.state, snap.calls) == (BreakerState.CLOSED, 0)


def test_a_failed_probe_reopens(breakers: MemoryBreakers, clock: Clock) -> None:
    open_it(breakers)
    clock.advance(5)
    probe = breakers.allow(NAME)
    recorded = breakers.record_failure(NAME, probe)
    assert recorded.transition is Transition.REOPENED
    assert breakers.allow(NAME).retry_after_s == 5.0
    assert breakers.snapshot(NAME).trips == 2


def test_a_lost_or_released_probe_frees_the_lease(breakers: MemoryBreakers, clock: Clock) -> None:
    open_it(breakers)
    clock.advance(5)
    first = breakers.allow(NAME)
    clock.advance(3.1)  # probe_timeout_s passed: its holder died
    second = breakers.allow(NAME)
    assert second.is_probe and second.token != first.token
    assert breakers.record_success(NAME, first).transition is None  # too late
    assert breakers.release(second).transition is Transition.RELEASED
    assert breakers.allow(NAME).is_probe


# --- pybreaker's API ----------------------------------------------------------------------


class Log(pybreaker.CircuitBreakerListener):
    def __init__(self) -> None:
        self.events: list[str] = []

    def before_call(self, cb: pybreaker.CircuitBreaker, func: Any, *a: Any, **k: Any) -> None:
        self.events.append("before")

    def success(self, cb: pybreaker.CircuitBreaker) -> None:
        self.events.append("success")

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        self.events.append(f"failure:{type(exc).__name__}")

    def state_change(self, cb: pybreaker.CircuitBreaker, old: Any, new: Any) -> None:
        self.events.append(f"{old.name if old else None}->{new.name}")


def boom() -> None:
    raise ProviderServerError()


def test_call_trips_rejects_and_recovers(breakers: MemoryBreakers, clock: Clock) -> None:
    log = Log()
    cb = FleetBreaker(breakers, NAME, listeners=[log])
    assert cb.call(lambda x: x + 1, 1) == 2
    for _ in range(2):
        with pytest.raises(ProviderServerError):
            cb.call(boom)
    with pytest.raises(pybreaker.CircuitBreakerError, match="opened"):
        cb.call(boom)  # 3 failures of 4 calls (min_calls 4) trip it
    assert cb.current_state == pybreaker.STATE_OPEN
    with pytest.raises(BreakerOpen) as rejected:
        cb.call(lambda: 1)
    assert rejected.value.permit.state is BreakerState.OPEN
    clock.advance(5)
    assert cb.current_state == pybreaker.STATE_HALF_OPEN
    assert cb.call(lambda: "probe") == "probe"
    assert cb.state.name == pybreaker.STATE_CLOSED
    assert "closed->open" in log.events and "half-open->closed" in log.events
    assert log.events.count("failure:ProviderServerError") == 3


def test_excluded_exceptions_count_as_success(breakers: MemoryBreakers) -> None:
    def bad_request() -> None:
        raise ModelBadRequest()

    cb = FleetBreaker(breakers, NAME, exclude=[ModelBadRequest])
    for _ in range(10):
        with pytest.raises(ModelBadRequest):
            cb.call(bad_request)
    snap = breakers.snapshot(NAME)
    assert (snap.state, snap.calls, snap.failures) == (BreakerState.CLOSED, 10, 0)
    assert cb.excluded_exceptions == (ModelBadRequest,)


def test_no_new_error_on_trip_reraises_the_original(breakers: MemoryBreakers) -> None:
    cb = FleetBreaker(breakers, NAME, throw_new_error_on_trip=False)
    for _ in range(4):
        with pytest.raises(ProviderServerError):
            cb.call(boom)
    assert cb.current_state == pybreaker.STATE_OPEN


def test_open_close_half_open_and_calling(breakers: MemoryBreakers) -> None:
    cb = FleetBreaker(breakers, NAME)
    assert cb.open() is True
    assert breakers.snapshot(NAME).state is BreakerState.OPEN
    cb.half_open()
    with cb.calling():
        pass  # the probe succeeds
    assert cb.current_state == pybreaker.STATE_CLOSED
    cb.open()
    cb.close()
    assert cb.state.name == pybreaker.STATE_CLOSED

    @cb
    def guarded(x: int) -> int:
        return x * 2

    assert guarded(4) == 8


def test_a_probe_interrupted_by_a_base_exception_is_released(
    breakers: MemoryBreakers,
) -> None:
    cb = FleetBreaker(breakers, NAME)
    cb.half_open()

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cb.call(interrupted)
    assert breakers.allow(NAME).is_probe  # the lease came back; nothing was counted
    assert breakers.snapshot(NAME).calls == 0


# --- Redis-down policy, without a server ----------------------------------------------


@pytest.mark.parametrize(("policy", "allowed"), [("fail_open", True), ("fail_closed", False)])
def test_an_error_reply_follows_the_policy(policy: str, allowed: bool) -> None:
    settings = small(on_redis_down=policy)
    client = redis.Redis(port=1)  # never connected: parse_allow reads a reply it is given
    breakers = RedisBreakers(client, settings)
    permit = breakers.parse_allow(NAME, redis.ConnectionError("down"))
    assert permit.unavailable and permit.allowed is allowed
    assert breakers.parse_record(NAME, redis.TimeoutError("slow")).unavailable
    client.close()
