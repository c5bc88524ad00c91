"""pybreaker's CircuitBreaker API over a fleet-wide breaker.

`call()`, `calling()`, the decorator form, `state`/`current_state`, `open()`/`close()`/
`half_open()`, listeners and `exclude` behave as in pybreaker, with these differences:
the state lives in Redis and every transition is atomic there; calls run concurrently (no
per-process lock around the call); the breaker opens on a failure rate over a sliding
window, not on `fail_max` consecutive failures; in half-open exactly one call of the whole
fleet runs as the probe, and the others are rejected with CircuitBreakerError while it
runs. A non-Exception BaseException (KeyboardInterrupt, gevent.Timeout, SystemExit) counts
as neither success nor failure. Generator functions and `call_async` are not supported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import pybreaker

from fleetline.shared.breakers.model import (
    BreakerOpen,
    Breakers,
    BreakerState,
    Permit,
    Recorded,
    Result,
    Transition,
)
from fleetline.shared.errors import StoreUnavailable

T = TypeVar("T")
Exclusion = type[BaseException] | Callable[[Any], bool]


class FleetBreaker(pybreaker.CircuitBreaker):
    """A pybreaker CircuitBreaker whose state is the fleet's breaker `name`."""

    def __init__(
        self,
        breakers: Breakers,
        name: str,
        *,
        exclude: Iterable[Exclusion] | None = None,
        listeners: Sequence[pybreaker.CircuitBreakerListener] | None = None,
        throw_new_error_on_trip: bool = True,
    ) -> None:
        """Wrap breaker `name` of `breakers` (RedisBreakers, or MemoryBreakers in tests).

        exclude: exception types (or predicates) that are not the service's fault: such a
        call counts as a success, as in pybreaker.
        """
        self.breakers = breakers
        # pybreaker reads the state while it constructs; no Redis round trip for that.
        self._ready = False
        super().__init__(
            fail_max=breakers.settings.min_calls,
            reset_timeout=breakers.settings.reset_timeout_s,
            exclude=list(exclude or []),
            listeners=listeners,
            state_storage=_Storage(self, name),
            name=name,
            throw_new_error_on_trip=throw_new_error_on_trip,
        )
        self._ready = True

    @property
    def breaker_name(self) -> str:
        return str(self.name)

    @property
    def current_state(self) -> str:
        """The fleet's state of this breaker: closed, open or half-open (one round trip)."""
        if not self._ready:
            return pybreaker.STATE_CLOSED
        try:
            return self.breakers.snapshot(self.breaker_name).state.value
        except StoreUnavailable:
            fail_open = self.breakers.settings.fail_open
            return pybreaker.STATE_CLOSED if fail_open else pybreaker.STATE_OPEN

    @property
    def state(self) -> Any:
        """The state object (pybreaker's), refreshed from the fleet's state; one round trip."""
        self._notice(BreakerState(self.current_state))
        return self._state

    @state.setter
    def state(self, state_str: str) -> None:
        self._notice(BreakerState(state_str))

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call `func` if the breaker allows it and record the result; raises
        CircuitBreakerError (BreakerOpen) when rejected, or when this call trips it."""
        permit = self._admit()
        for listener in self.listeners:
            listener.before_call(self, func, *args, **kwargs)
        try:
            result = func(*args, **kwargs)
        except Exception as exc:
            self._failed(permit, exc)
            raise
        except BaseException:
            self.breakers.record(self.breaker_name, Result.RELEASE, permit)
            raise
        self._succeeded(permit)
        return result

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """`with breaker.calling():` runs the block as call() runs a function."""
        permit = self._admit()
        try:
            yield
        except Exception as exc:
            self._failed(permit, exc)
            raise
        except BaseException:
            self.breakers.record(self.breaker_name, Result.RELEASE, permit)
            raise
        self._succeeded(permit)

    def call_async(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("FleetBreaker does not support tornado coroutines")

    def open(self) -> bool:
        """Open the breaker fleet-wide for reset_timeout_s; returns throw_new_error_on_trip."""
        self.breakers.force(self.breaker_name, BreakerState.OPEN)
        self._notice(BreakerState.OPEN)
        return bool(self._throw_new_error_on_trip)

    def half_open(self) -> None:
        """Let the fleet's next call through as the probe."""
        self.breakers.force(self.breaker_name, BreakerState.HALF_OPEN)
        self._notice(BreakerState.HALF_OPEN)

    def close(self) -> None:
        """Close the breaker fleet-wide and empty its window."""
        self.breakers.force(self.breaker_name, BreakerState.CLOSED)
        self._notice(BreakerState.CLOSED)

    # --- internals ----------------------------------------------------------------------

    def _admit(self) -> Permit:
        permit = self.breakers.allow(self.breaker_name)
        if not permit.unavailable:
            self._notice(permit.state)
        if not permit.allowed:
            raise BreakerOpen(permit)
        return permit

    def _succeeded(self, permit: Permit) -> None:
        recorded = self.breakers.record(self.breaker_name, Result.SUCCESS, permit)
        self._follow(recorded)
        for listener in self.listeners:
            listener.success(self)

    def _failed(self, permit: Permit, exc: Exception) -> None:
        """Record a failed call; raise CircuitBreakerError when it tripped the breaker."""
        if not self.is_system_error(exc):
            self._succeeded(permit)
            return
        recorded = self.breakers.record(self.breaker_name, Result.FAILURE, permit)
        for listener in self.listeners:
            listener.failure(self, exc)
        self._follow(recorded)
        if self._throw_new_error_on_trip and recorded.transition in _TRIPS:
            message = _TRIPS[recorded.transition]
            refused = Permit(self.breaker_name, BreakerState.OPEN, allowed=False)
            raise BreakerOpen(refused, f"breaker {self.breaker_name}: {message}") from exc

    def _follow(self, recorded: Recorded) -> None:
        if not recorded.unavailable:
            self._notice(recorded.state)

    def _notice(self, state: BreakerState) -> None:
        """Adopt the fleet's state, telling listeners when it differs from the last seen."""
        with self._lock:
            if self._state.name != state.value:
                self._state = self._create_new_state(
                    state.value, prev_state=self._state, notify=True
                )


_TRIPS = {
    Transition.OPENED: "failure rate threshold reached, circuit breaker opened",
    Transition.REOPENED: "trial call failed, circuit breaker opened",
}


class _Storage(pybreaker.CircuitBreakerStorage):
    """pybreaker's storage interface, read from the fleet's breaker.

    FleetBreaker records through `Breakers`, not through the storage's counters, so the
    writes pybreaker makes on state changes (counter resets) do nothing here.
    """

    def __init__(self, owner: FleetBreaker, name: str) -> None:
        super().__init__(name)
        self._owner = owner

    @property
    def state(self) -> str:
        return self._owner.current_state

    @state.setter
    def state(self, state: str) -> None:
        self._owner.breakers.force(self.name, BreakerState(state))

    @property
    def counter(self) -> int:
        """Failures in the breaker's window."""
        return self._owner.breakers.snapshot(self.name).failures

    @property
    def success_counter(self) -> int:
        return 0

    @property
    def opened_at(self) -> datetime | None:
        opened = self._owner.breakers.snapshot(self.name).opened_at
        return datetime.fromtimestamp(opened, UTC) if opened is not None else None

    @opened_at.setter
    def opened_at(self, value: datetime) -> None:
        return None
