"""The fleet's breakers in Redis: every transition is one Lua script, one round trip.

allow() on a closed breaker is one HMGET. The `queue_*` forms put the same scripts on a
caller's pipeline (a `RoundTrip`) next to other guards' commands; `parse_*` read
their replies. When Redis does not answer, the on_redis_down policy decides at once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fleetline.shared import keys
from fleetline.shared.breakers.model import (
    BreakerSnapshot,
    BreakerState,
    Permit,
    Recorded,
    Result,
    build_snapshot,
    check_name,
    parse_permit,
    parse_recorded,
    text,
)
from fleetline.shared.breakers.settings import BreakerSettings
from fleetline.shared.errors import StoreUnavailable
from fleetline.shared.redis_target import RedisTarget
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.scripts import load_script

logger = logging.getLogger(__name__)

# An outage is logged at most this often per process, not once per call.
_LOG_EVERY_S = 10.0


def breaker_redis(
    url: str | RedisTarget,
    settings: BreakerSettings,
    *,
    decode_responses: bool = False,
    max_connections: int | None = None,
) -> redis.Redis:
    """A client for the breakers: short timeouts and no retries, so a dead Redis is known
    within `socket_timeout_s` and the policy decides."""
    target = url if isinstance(url, RedisTarget) else RedisTarget(url)
    return target.client(
        socket_timeout=settings.socket_timeout_s,
        socket_connect_timeout=settings.connect_timeout_s,
        retry=Retry(NoBackoff(), 0),
        decode_responses=decode_responses,
        max_connections=max_connections,
    )


def _keys(name: str) -> list[str]:
    return [
        keys.breaker(name),
        keys.breaker_window(name),
        keys.breaker_probe(name),
        keys.breaker_registry(),
    ]


def _record_keys(name: str, once: str) -> list[str]:
    """The record script's keys; with `once`, the marker that makes the result count once."""
    marker = [keys.breaker_result_once(name, once)] if once else []
    return _keys(name) + marker


class RedisBreakers:
    """Every breaker of the fleet, in Redis. One instance per process; the client is injected
    (build it with `breaker_redis` for the short timeouts)."""

    def __init__(
        self,
        client: redis.Redis,
        settings: BreakerSettings | None = None,
        once_ttl_s: int = keys.CLOSING_ONCE_TTL_S,
    ) -> None:
        """once_ttl_s: how long a result's once-marker lives (keys.closing_once_ttl_s)."""
        self.client = client
        self.settings = settings or BreakerSettings()
        self.once_ttl_s = once_ttl_s
        self._allow = load_script(client, "breaker_allow", "breaker_lib")
        self._record = load_script(client, "breaker_record", "breaker_lib")
        self._force = load_script(client, "breaker_force", "breaker_lib")
        # Probe tokens this process holds, for record_*() calls that pass no permit.
        self._probes: dict[str, str] = {}
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._logged_at = 0.0

    # --- the hot path -----------------------------------------------------------------

    def allow(self, name: str) -> Permit:
        """May a call of breaker `name` go ahead (and is it the fleet's half-open probe)?"""
        check_name(name)
        if self._skipping():
            return self.unavailable_permit(name)
        try:
            reply = self._allow(
                keys=[keys.breaker(name), keys.breaker_probe(name)],
                args=[uuid.uuid4().hex, self.settings.probe_ms],
            )
        except redis.RedisError as exc:
            return self.unavailable_permit(name, exc)
        return self.parse_allow(name, reply)

    def record_success(self, name: str, permit: Permit | None = None) -> Recorded:
        """Count a successful call; a probe's success closes the breaker."""
        return self.record(name, Result.SUCCESS, permit)

    def record_failure(self, name: str, permit: Permit | None = None) -> Recorded:
        """Count a failed call; it opens the breaker at the failure rate, or reopens it after
        a failed probe."""
        return self.record(name, Result.FAILURE, permit)

    def release(self, permit: Permit) -> Recorded:
        """The permitted call did not happen: give a probe's lease back; nothing is counted."""
        return self.record(permit.name, Result.RELEASE, permit)

    def record(self, name: str, result: Result, permit: Permit | None = None) -> Recorded:
        """Record what became of a call. Pass the call's permit: without one, a probe this
        process holds for `name` is assumed to be this call."""
        check_name(name)
        token = self._token(name, permit)
        if self._skipping():
            return self._unavailable_record(name)
        try:
            reply = self._record(keys=_keys(name), args=self._record_args(name, result, token))
        except redis.RedisError as exc:
            self._note_down(exc)
            return self._unavailable_record(name)
        return parse_recorded(name, reply)

    # --- round-trip forms (one round trip together with other guards) -----------------

    def queue_allow(self, trip: RoundTrip, name: str) -> int:
        """Queue the allow script; return its reply's index (see parse_allow)."""
        return trip.script(
            self._allow,
            [keys.breaker(check_name(name)), keys.breaker_probe(name)],
            [uuid.uuid4().hex, self.settings.probe_ms],
        )

    def parse_allow(self, name: str, reply: Any) -> Permit:
        """The Permit of a queued allow's reply; an error reply follows the Redis-down policy."""
        if isinstance(reply, Exception):
            return self.unavailable_permit(name, reply)
        permit = parse_permit(name, reply)
        if permit.is_probe:
            with self._lock:
                self._probes[name] = permit.token
        return permit

    def queue_record(
        self,
        trip: RoundTrip,
        name: str,
        result: Result,
        permit: Permit | None = None,
        *,
        once: str = "",
    ) -> int:
        """Queue the record script; return its reply's index (see parse_record).

        once: the delivery this result belongs to. A round trip run again after Redis lost
        its reply (the closing trip, through_outage) then counts the result once and
        replies as the first time; empty records every time.
        """
        token = self._token(check_name(name), permit)
        return trip.script(
            self._record, _record_keys(name, once), self._record_args(name, result, token)
        )

    def parse_record(self, name: str, reply: Any) -> Recorded:
        """The Recorded of a queued record's reply (an error reply: unavailable)."""
        if isinstance(reply, Exception):
            self._note_down(reply)
            return self._unavailable_record(name)
        return parse_recorded(name, reply)

    def unavailable_permit(self, name: str, error: BaseException | None = None) -> Permit:
        """The on_redis_down policy's answer; use it when a trip holding an allow failed."""
        if error is not None:
            self._note_down(error)
        fail_open = self.settings.fail_open
        return Permit(
            name=name,
            state=BreakerState.CLOSED if fail_open else BreakerState.OPEN,
            allowed=fail_open,
            unavailable=True,
        )

    # --- operators (pybreaker's open/close/half_open, the CLI) -------------------------

    def force(self, name: str, state: BreakerState) -> BreakerState:
        """Set a breaker's state by hand; return the state it was in. Closing empties its
        window. Raises StoreUnavailable when Redis does not answer."""
        try:
            previous, _ = self._force(
                keys=_keys(check_name(name)),
                args=[name, BreakerState(state).value, self.settings.reset_ms, _idle_s()],
            )
        except redis.RedisError as exc:
            raise StoreUnavailable(f"breaker {name}: {exc}") from exc
        return BreakerState(text(previous))

    def reset(self, name: str) -> BreakerState:
        """Close a breaker and forget its window; return the state it was in."""
        return self.force(name, BreakerState.CLOSED)

    def snapshot(self, name: str) -> BreakerSnapshot:
        """One breaker's state, window counts and timings. Raises StoreUnavailable."""
        return self._snapshots([check_name(name)])[0]

    def list_breakers(self) -> list[BreakerSnapshot]:
        """Every breaker written to within the idle TTL, by name. Raises StoreUnavailable."""
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.time()
            pipe.zrange(keys.breaker_registry(), 0, -1, withscores=True)
            (seconds, micros), members = pipe.execute()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"breakers: {exc}") from exc
        cutoff = int(seconds) * 1000 + int(micros) // 1000 - _idle_s() * 1000
        names = sorted(text(m) for m, score in members if score >= cutoff)
        if len(names) < len(members):
            self._prune(cutoff)
        return self._snapshots(names) if names else []

    # --- internals ----------------------------------------------------------------------

    def _snapshots(self, names: list[str]) -> list[BreakerSnapshot]:
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.time()
            for name in names:
                pipe.hgetall(keys.breaker(name))
                pipe.hgetall(keys.breaker_window(name))
                pipe.pttl(keys.breaker_probe(name))
            seconds, micros, *rest = _flat_time(pipe.execute())
        except redis.RedisError as exc:
            raise StoreUnavailable(f"breakers: {exc}") from exc
        now_ms = seconds * 1000 + micros // 1000
        snapshots = []
        for i, name in enumerate(names):
            record, window, pttl = rest[3 * i : 3 * i + 3]
            snapshots.append(
                build_snapshot(name, _strs(record), _strs(window), int(pttl), now_ms, self.settings)
            )
        return snapshots

    def _prune(self, cutoff_ms: int) -> None:
        try:
            self.client.zremrangebyscore(keys.breaker_registry(), "-inf", f"({cutoff_ms}")
        except redis.RedisError:
            logger.debug("could not prune the breaker registry", exc_info=True)

    def _record_args(self, name: str, result: Result, token: str) -> list[Any]:
        s = self.settings
        return [
            name,
            Result(result).value,
            token,
            s.bucket_ms,
            s.buckets,
            s.min_calls,
            repr(s.failure_rate),
            s.reset_ms,
            _idle_s(),
            self.once_ttl_s,
        ]

    def _token(self, name: str, permit: Permit | None) -> str:
        with self._lock:
            held = self._probes.pop(name, "")
            if permit is None:
                return held
            if held and held != permit.token:
                self._probes[name] = held  # another call's probe: keep it
            return permit.token if permit.is_probe else ""

    def _unavailable_record(self, name: str) -> Recorded:
        state = BreakerState.CLOSED if self.settings.fail_open else BreakerState.OPEN
        return Recorded(name=name, state=state, unavailable=True)

    def _skipping(self) -> bool:
        return time.monotonic() < self._down_until

    def _note_down(self, error: BaseException) -> None:
        now = time.monotonic()
        self._down_until = now + self.settings.redis_down_recheck_s
        if now - self._logged_at >= _LOG_EVERY_S or self._logged_at == 0.0:
            self._logged_at = now
            logger.warning(
                "circuit breakers: Redis unavailable (%s: %s); policy %s %s calls",
                type(error).__name__,
                error,
                self.settings.on_redis_down,
                "allows" if self.settings.fail_open else "rejects",
            )


def _idle_s() -> int:
    return keys.BREAKER_IDLE_TTL_S


def _flat_time(replies: list[Any]) -> list[Any]:
    (seconds, micros), *rest = replies
    return [int(seconds), int(micros), *rest]


def _strs(raw: dict[Any, Any]) -> dict[str, str]:
    return {text(k): text(v) for k, v in raw.items()}
