"""Breakers in one process's memory, with an injectable clock: for unit tests.

Same rules as the Lua scripts (shared/lua/breaker_*.lua), same replies as RedisBreakers.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from fleetline.shared.breakers.model import (
    BreakerSnapshot,
    BreakerState,
    Permit,
    Recorded,
    Result,
    Transition,
    bucket_of,
    build_snapshot,
    check_name,
    derive_state,
    trips,
    window_counts,
)
from fleetline.shared.breakers.settings import BreakerSettings


@dataclass
class _Breaker:
    record: dict[str, str] = field(default_factory=dict)
    window: dict[str, str] = field(default_factory=dict)
    probe: str = ""
    probe_until_ms: int = 0


class MemoryBreakers:
    """Every breaker of this process (not fleet-wide): the Redis rules without Redis."""

    def __init__(
        self, settings: BreakerSettings | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings or BreakerSettings()
        self._clock = clock
        self._breakers: dict[str, _Breaker] = {}
        self._lock = threading.Lock()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _get(self, name: str) -> _Breaker:
        return self._breakers.setdefault(check_name(name), _Breaker())

    def allow(self, name: str) -> Permit:
        """May a call go ahead (and is it the half-open probe)?"""
        with self._lock:
            b, now = self._get(name), self._now_ms()
            state = self._state(b, now)
            if state is BreakerState.CLOSED:
                return Permit(name, state, allowed=True)
            if state is BreakerState.OPEN:
                wait = int(b.record["half_open_at"]) - now
                return Permit(name, state, allowed=False, retry_after_s=wait / 1000)
            if b.probe and b.probe_until_ms > now:
                return Permit(name, state, False, retry_after_s=(b.probe_until_ms - now) / 1000)
            b.probe, b.probe_until_ms = uuid.uuid4().hex, now + self.settings.probe_ms
            return Permit(name, state, allowed=True, is_probe=True, token=b.probe)

    def record_success(self, name: str, permit: Permit | None = None) -> Recorded:
        return self.record(name, Result.SUCCESS, permit)

    def record_failure(self, name: str, permit: Permit | None = None) -> Recorded:
        return self.record(name, Result.FAILURE, permit)

    def release(self, permit: Permit) -> Recorded:
        return self.record(permit.name, Result.RELEASE, permit)

    def record(self, name: str, result: Result, permit: Permit | None = None) -> Recorded:
        """Record what became of a call (see RedisBreakers.record)."""
        s = self.settings
        with self._lock:
            b, now = self._get(name), self._now_ms()
            token = permit.token if permit is not None and permit.is_probe else ""
            if permit is None and b.probe and b.probe_until_ms > now:
                token = b.probe  # one process: the probe holder is this process
            probing = bool(token) and b.probe == token and b.probe_until_ms > now
            if result is Result.RELEASE:
                if probing:
                    b.probe = ""
                return Recorded(name, self._state(b, now), Transition.RELEASED if probing else None)
            bucket = bucket_of(now, s.bucket_ms)
            slot = bucket % s.buckets
            if b.window.get(f"t{slot}") != str(bucket):
                b.window.update({f"t{slot}": str(bucket), f"c{slot}": "0", f"f{slot}": "0"})
            b.window[f"c{slot}"] = str(int(b.window[f"c{slot}"]) + 1)
            if result is Result.FAILURE:
                b.window[f"f{slot}"] = str(int(b.window[f"f{slot}"]) + 1)
            calls, failures = window_counts(b.window, bucket, s.buckets)
            if probing:
                if result is Result.SUCCESS:
                    self._close(b, now)
                    return Recorded(name, BreakerState.CLOSED, Transition.CLOSED)
                self._trip(b, now, s.reset_ms)
                return Recorded(name, BreakerState.OPEN, Transition.REOPENED, calls, failures)
            state = self._state(b, now)
            if (
                state is BreakerState.CLOSED
                and result is Result.FAILURE
                and trips(calls, failures, s.min_calls, s.failure_rate)
            ):
                self._trip(b, now, s.reset_ms)
                return Recorded(name, BreakerState.OPEN, Transition.OPENED, calls, failures)
            return Recorded(name, state, None, calls, failures)

    def force(self, name: str, state: BreakerState) -> BreakerState:
        """Set a breaker's state by hand; return the state it was in."""
        with self._lock:
            b, now = self._get(name), self._now_ms()
            previous = self._state(b, now)
            target = BreakerState(state)
            if target is BreakerState.CLOSED:
                self._close(b, now)
            elif target is BreakerState.OPEN:
                self._trip(b, now, self.settings.reset_ms)
            else:
                b.record.update(state="open", half_open_at=str(now))
                b.record.setdefault("opened_at", str(now))
                b.probe = ""
            return previous

    def reset(self, name: str) -> BreakerState:
        return self.force(name, BreakerState.CLOSED)

    def snapshot(self, name: str) -> BreakerSnapshot:
        with self._lock:
            b, now = self._get(name), self._now_ms()
            pttl = b.probe_until_ms - now if b.probe else -2
            return build_snapshot(name, b.record, b.window, pttl, now, self.settings)

    def list_breakers(self) -> list[BreakerSnapshot]:
        return [self.snapshot(name) for name in sorted(self._breakers)]

    @staticmethod
    def _state(b: _Breaker, now: int) -> BreakerState:
        half_open_at = b.record.get("half_open_at")
        return derive_state(b.record.get("state"), int(half_open_at) if half_open_at else None, now)

    @staticmethod
    def _trip(b: _Breaker, now: int, reset_ms: int) -> None:
        trips_so_far = int(b.record.get("trips", "0"))
        b.record.update(
            state="open",
            opened_at=str(now),
            half_open_at=str(now + reset_ms),
            trips=str(trips_so_far + 1),
        )
        b.probe = ""

    @staticmethod
    def _close(b: _Breaker, now: int) -> None:
        b.record.update(state="closed", closed_at=str(now))
        b.record.pop("opened_at", None)
        b.record.pop("half_open_at", None)
        b.window.clear()
        b.probe = ""
