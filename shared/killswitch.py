"""Spend kill switches: per scope (fleet, tenant:X, worker_type:Y) and UTC window (hour, day).

A tripped switch is a Redis key whose TTL runs to the end of its window, so the expiry IS
the automatic reset when the window rolls over. Checking the switches that apply to a
call is one MGET.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetline.shared import keys
from fleetline.shared.ledger import ScopeKind, SpendReport, SpendSettings, Window, window_bounds
from fleetline.shared.round_trip import RoundTrip, one_reply

_SCOPE = re.compile(r"^(fleet|tenant:.+|worker_type:.+)$")
_SWITCHED = {k.value: k for k in (ScopeKind.FLEET, ScopeKind.TENANT, ScopeKind.WORKER_TYPE)}
_ADJECTIVE = {Window.HOUR: "hourly", Window.DAY: "daily"}


@dataclass(frozen=True)
class SwitchState:
    """A tripped switch: why, since when, and when its window ends (it resets then)."""

    scope: str
    window: Window
    reason: str
    tripped_at: float
    resets_at: float
    tripped: bool = True

    def to_json(self) -> str:
        return json.dumps(
            {
                "scope": self.scope,
                "window": self.window.value,
                "reason": self.reason,
                "tripped_at": self.tripped_at,
                "resets_at": self.resets_at,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> SwitchState:
        data = json.loads(raw)
        return cls(
            scope=data["scope"],
            window=Window(data["window"]),
            reason=data["reason"],
            tripped_at=float(data["tripped_at"]),
            resets_at=float(data["resets_at"]),
        )


def check_scope(scope: str) -> str:
    """The scope if it is `fleet`, `tenant:<name>` or `worker_type:<name>`; else ValueError."""
    if not _SCOPE.match(scope):
        raise ValueError(f"kill switch scope must be fleet, tenant:X or worker_type:Y: {scope!r}")
    return scope


def applicable_keys(tenant: str | None, worker_type: str | None) -> list[str]:
    """The switch keys that can stop a call of this tenant and worker type, widest first."""
    scopes = ["fleet"]
    if tenant:
        scopes.append(f"tenant:{tenant}")
    if worker_type:
        scopes.append(f"worker_type:{worker_type}")
    return [keys.kill_switch(s, w.code) for s in scopes for w in (Window.DAY, Window.HOUR)]


def parse_active_for(reply: Any, now: float | None = None) -> SwitchState | None:
    """The first tripped switch in a queued active_for reply (MGET), or None."""
    now = time.time() if now is None else now
    for raw in reply:
        if raw is not None:
            state = SwitchState.from_json(raw)
            if state.resets_at > now:
                return state
    return None


class KillSwitches:
    """Kill switches in Redis. The client is injected, one per process."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client

    def trip(
        self,
        scope: str,
        window: Window | str,
        reason: str,
        now: float | None = None,
        *,
        keep_existing: bool = False,
    ) -> SwitchState | None:
        """Trip a switch until the end of the current window.

        keep_existing: leave a switch that is already tripped as it is (returns None then).
        """
        window, now = Window(window), time.time() if now is None else now
        _, _, end = window_bounds(window, now)
        state = SwitchState(check_scope(scope), window, reason, now, end)
        pipe = self._r.pipeline(transaction=True)
        self._queue_trip(pipe, state, now, keep_existing)
        done = pipe.execute()[0]
        return state if done else None

    def _queue_trip(self, pipe: Any, state: SwitchState, now: float, nx: bool) -> None:
        key = keys.kill_switch(state.scope, state.window.code)
        ttl_ms = max(1, int((state.resets_at - now) * 1000))
        pipe.set(key, state.to_json(), px=ttl_ms, nx=nx)
        pipe.zadd(keys.kill_index(), {key: state.resets_at})
        pipe.expire(keys.kill_index(), keys.KILL_INDEX_TTL_S)

    def reset(self, scope: str, window: Window | str) -> bool:
        """Clear a switch by hand; False when it was not tripped."""
        key = keys.kill_switch(check_scope(scope), Window(window).code)
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(key)
        pipe.zrem(keys.kill_index(), key)
        return int(pipe.execute()[0]) == 1

    def status(self, now: float | None = None) -> list[SwitchState]:
        """Every tripped switch, with its reason and when it resets, soonest reset first."""
        now = time.time() if now is None else now
        pipe = self._r.pipeline(transaction=False)
        pipe.zremrangebyscore(keys.kill_index(), "-inf", now)
        pipe.zrange(keys.kill_index(), 0, -1)
        _, members = pipe.execute()
        if not members:
            return []
        states = [SwitchState.from_json(raw) for raw in self._r.mget(members) if raw is not None]
        return [s for s in states if s.resets_at > now]

    def active_for(
        self, tenant: str | None, worker_type: str | None, now: float | None = None
    ) -> SwitchState | None:
        """The switch that stops this tenant's (and worker type's) calls, or None. One MGET."""
        reply = one_reply(self._r, lambda trip: self.queue_active_for(trip, tenant, worker_type))
        return parse_active_for(reply, now)

    def queue_active_for(self, trip: RoundTrip, tenant: str | None, worker_type: str | None) -> int:
        """Queue the check; read the reply at the index returned with parse_active_for."""
        return trip.queue("MGET", *applicable_keys(tenant, worker_type))

    def check_and_trip(
        self,
        reports: Iterable[SpendReport],
        limits: SpendSettings,
        now: float | None = None,
        trip_at: float = 1.0,
    ) -> list[SwitchState]:
        """Trip every scope whose spend has reached `trip_at` of its limit; return the
        switches tripped now.

        The beat runs this every few seconds with the current hour's and day's reports.
        Reaching the limit counts (no call can be reserved past it anyway); a switch already
        tripped is left alone, and a report of a window that has ended is ignored.
        """
        now = time.time() if now is None else now
        wanted: list[SwitchState] = []
        for report in reports:
            if report.ends_at <= now:
                continue
            for label, spend in report.scopes.items():
                kind_name, _, name = label.partition(":")
                kind = _SWITCHED.get(kind_name)
                if kind is None:
                    continue
                limit = limits.limit(kind, name, report.window)
                if limit is not None and spend.spent_usd >= limit * trip_at:
                    reason = (
                        f"{label} spent ${spend.spent_usd:.4f} of its "
                        f"{_ADJECTIVE[report.window]} limit ${limit:g}"
                    )
                    wanted.append(SwitchState(label, report.window, reason, now, report.ends_at))
        if not wanted:
            return []
        pipe = self._r.pipeline(transaction=True)
        for state in wanted:
            self._queue_trip(pipe, state, now, nx=True)
        done = pipe.execute()[::3]
        return [s for s, ok in zip(wanted, done, strict=True) if ok]


class KillSwitchSettings(BaseSettings):
    """How often beat enforces the spend kill switches."""

    model_config = SettingsConfigDict(env_prefix="FLEETLINE_KILLSWITCH_", extra="ignore")

    interval_s: float = Field(default=15.0, gt=0)
    # Reservations never let spend pass a limit, so a switch waiting for 100 % would never
    # trip: it trips once spend reaches this share of the limit.
    trip_at: float = Field(default=0.95, gt=0, le=1)


@dataclass(frozen=True)
class EnforcementRecord:
    """What the checks left in Redis: paused queues, how many checks ran, the last one."""

    paused: dict[str, list[str]] = field(default_factory=dict)
    checks: int = 0
    last_check_at: float | None = None


def read_enforcement(client: redis.Redis) -> EnforcementRecord:
    """The record beat's enforcement checks keep in Redis."""
    raw = {_decoded(k): _decoded(v) for k, v in client.hgetall(keys.kill_enforcement()).items()}
    return EnforcementRecord(
        paused=json.loads(raw.get("paused", "{}")),
        checks=int(raw.get("checks", "0")),
        last_check_at=float(raw["last_check_at"]) if "last_check_at" in raw else None,
    )


def _decoded(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
