"""What a breaker says: states, permits, recorded results, snapshots; and the pure rules.

The rules here (window arithmetic, when a breaker trips) are the ones the Lua scripts
apply; the in-memory breakers use them directly.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import pybreaker

from fleetline.shared.breakers.settings import BreakerSettings

_NAME = re.compile(r"^[A-Za-z0-9._/@+-]+(:[A-Za-z0-9._/@+-]+)*$")
_MAX_NAME = 200


class BreakerState(StrEnum):
    """A breaker's state, spelled as pybreaker spells it."""

    CLOSED = pybreaker.STATE_CLOSED
    OPEN = pybreaker.STATE_OPEN
    HALF_OPEN = pybreaker.STATE_HALF_OPEN


class Result(StrEnum):
    """What became of a call that a permit let through."""

    SUCCESS = "success"
    FAILURE = "failure"
    # Neither: the call did not happen or proves nothing (another guard stopped it, the
    # worker is shutting down). A probe's lease is given back so that another caller probes.
    RELEASE = "release"


class Transition(StrEnum):
    """A state change that a recorded result caused."""

    OPENED = "opened"  # closed -> open: the failure rate reached the threshold
    CLOSED = "closed"  # half-open -> closed: the probe succeeded
    REOPENED = "reopened"  # half-open -> open: the probe failed
    RELEASED = "released"  # the probe's lease was given back unused


@dataclass(frozen=True)
class Permit:
    """Whether a call may go ahead, and whether it is the fleet's one half-open probe.

    unavailable: Redis did not answer; `allowed` then follows the on_redis_down policy.
    """

    name: str
    state: BreakerState
    allowed: bool
    is_probe: bool = False
    token: str = ""
    retry_after_s: float = 0.0
    unavailable: bool = False


@dataclass(frozen=True)
class Recorded:
    """The breaker after a result was recorded; calls/failures are its window's counts."""

    name: str
    state: BreakerState
    transition: Transition | None = None
    calls: int = 0
    failures: int = 0
    unavailable: bool = False


@dataclass(frozen=True)
class BreakerSnapshot:
    """A breaker as an operator sees it (times in epoch seconds)."""

    name: str
    state: BreakerState
    calls: int
    failures: int
    failure_rate: float
    opened_at: float | None
    half_open_in_s: float | None  # None when closed; 0 when a probe may run now
    probe_in_flight: bool
    trips: int


class BreakerOpen(pybreaker.CircuitBreakerError):
    """The circuit breaker is open: the call was not made."""

    def __init__(self, permit: Permit, message: str | None = None) -> None:
        self.permit = permit
        super().__init__(message or _rejection(permit))


def _rejection(permit: Permit) -> str:
    if permit.unavailable:
        return f"breaker {permit.name}: Redis unavailable, policy fail_closed rejects the call"
    if permit.state is BreakerState.HALF_OPEN:
        return f"breaker {permit.name} is half-open: a trial call is in flight"
    return (
        f"breaker {permit.name} is open: timeout not elapsed yet ({permit.retry_after_s:.1f}s left)"
    )


class Breakers(Protocol):
    """Every breaker of the fleet by name; a Redis and an in-memory implementation."""

    settings: BreakerSettings

    def allow(self, name: str) -> Permit: ...

    def record(self, name: str, result: Result, permit: Permit | None = None) -> Recorded: ...

    def force(self, name: str, state: BreakerState) -> BreakerState: ...

    def snapshot(self, name: str) -> BreakerSnapshot: ...


@functools.lru_cache(maxsize=4096)  # a fleet has few names, and every call checks one
def check_name(name: str) -> str:
    """The name if it can name a breaker (`worker_type:model`, no spaces or braces)."""
    if len(name) > _MAX_NAME or not _NAME.match(name):
        raise ValueError(f"invalid breaker name {name!r}: expected e.g. 'extraction:sim-small'")
    return name


def breaker_name(worker_type: str, model: str) -> str:
    """The breaker of one (worker type, model): `extraction:sim-small`."""
    return check_name(f"{worker_type}:{model}")


def bucket_of(now_ms: int, bucket_ms: int) -> int:
    """The window bucket a moment falls in."""
    return now_ms // bucket_ms


def window_counts(fields: Mapping[str, str], bucket: int, buckets: int) -> tuple[int, int]:
    """(calls, failures) of the ring's slots that count buckets inside the window ending at
    `bucket`; `fields` as stored: t<i> bucket number, c<i> calls, f<i> failures."""
    calls = failures = 0
    for i in range(buckets):
        stamp = fields.get(f"t{i}")
        if stamp is not None and bucket - buckets < int(stamp) <= bucket:
            calls += int(fields.get(f"c{i}", 0))
            failures += int(fields.get(f"f{i}", 0))
    return calls, failures


def trips(calls: int, failures: int, min_calls: int, failure_rate: float) -> bool:
    """Whether a closed breaker opens: enough calls, and failures at or past the rate."""
    return calls >= min_calls and failures >= failure_rate * calls


def derive_state(stored: str | None, half_open_at_ms: int | None, now_ms: int) -> BreakerState:
    """The state from what is stored: half-open is an open breaker whose timeout passed."""
    if stored != BreakerState.OPEN.value:
        return BreakerState.CLOSED
    if now_ms < (half_open_at_ms or 0):
        return BreakerState.OPEN
    return BreakerState.HALF_OPEN


def text(value: Any) -> str:
    """A reply as str, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_permit(name: str, reply: Any) -> Permit:
    """The Permit of an allow reply {state, allowed, is_probe, wait_ms, token}."""
    state, allowed, is_probe, wait_ms, token = reply
    return Permit(
        name=name,
        state=BreakerState(text(state)),
        allowed=int(allowed) == 1,
        is_probe=int(is_probe) == 1,
        token=text(token),
        retry_after_s=int(wait_ms) / 1000,
    )


def parse_recorded(name: str, reply: Any) -> Recorded:
    """The Recorded of a record reply {state, transition, calls, failures}."""
    state, transition, calls, failures = reply
    change = text(transition)
    return Recorded(
        name=name,
        state=BreakerState(text(state)),
        transition=Transition(change) if change else None,
        calls=int(calls),
        failures=int(failures),
    )


def build_snapshot(
    name: str,
    record: Mapping[str, str],
    window: Mapping[str, str],
    probe_pttl_ms: int,
    now_ms: int,
    settings: BreakerSettings,
) -> BreakerSnapshot:
    """A snapshot from the stored state, window and probe lease, at the server's `now_ms`."""
    half_open_at = int(record["half_open_at"]) if record.get("half_open_at") else None
    state = derive_state(record.get("state"), half_open_at, now_ms)
    calls, failures = window_counts(window, bucket_of(now_ms, settings.bucket_ms), settings.buckets)
    opened_at = int(record["opened_at"]) / 1000 if record.get("opened_at") else None
    if state is BreakerState.CLOSED:
        wait: float | None = None
    else:
        wait = max(0.0, ((half_open_at or 0) - now_ms) / 1000)
    return BreakerSnapshot(
        name=name,
        state=state,
        calls=calls,
        failures=failures,
        failure_rate=failures / calls if calls else 0.0,
        opened_at=opened_at if state is not BreakerState.CLOSED else None,
        half_open_in_s=wait,
        probe_in_flight=state is BreakerState.HALF_OPEN and probe_pttl_ms > 0,
        trips=int(record.get("trips", 0)),
    )
