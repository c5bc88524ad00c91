"""The result cache: validated model outputs, reused across workers, with single flight.

An entry's key is a digest of (worker type, model, prompt version, normalised input,
tenant or "shared"), so one tenant's entry is never served to another unless the caller
marks the call `shared`. Only output that passed the validation gate may be stored: the
cache serves what it holds without checking it again, and the caller guarantees that.

Single flight: the first caller of a missing entry takes a lease (SET NX PX) and makes the
provider call; concurrent callers of the same key, in any process, wait for the value.
If the lease holder dies, its lease expires and the next waiter takes it over.

    hit = cache.lookup_or_lease(key, lease_ms)      # one round trip
    Hit      -> use hit.output; ledger.record_saving("cache", hit.cost_usd, scopes)
    Lease    -> call the model, validate, cache.store(key, output, cost, ttl_s, hit.token)
                (on failure: cache.abandon(key, hit.token))
    Wait     -> cache.wait_for(key, timeout_s, lease_ms): Hit, Lease (took over) or Wait
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis

from fleetline.shared import keys
from fleetline.shared.round_trip import RoundTrip, one_reply
from fleetline.shared.scripts import load_script

SHARED_SCOPE = "shared"
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Hit:
    """A cached validated output, and what producing it cost (the saving of reusing it)."""

    output: Any
    cost_usd: float
    model: str = ""
    stored_at: float = 0.0


@dataclass(frozen=True)
class Lease:
    """This caller computes the entry; it must store() or abandon() with the token."""

    token: str


@dataclass(frozen=True)
class Wait:
    """Another caller holds the lease (for about `lease_ms` more); wait for its value."""

    lease_ms: int


Lookup = Hit | Lease | Wait


def normalise_input(text: str) -> str:
    """Whitespace collapsed to single spaces and stripped: formatting never splits entries."""
    return _SPACES.sub(" ", text).strip()


def cache_key(
    worker_type: str,
    model: str,
    prompt_version: str,
    input_text: str,
    tenant: str,
    *,
    shared: bool = False,
) -> str:
    """The entry's digest: tenant-scoped unless `shared` (then every tenant may reuse it)."""
    scope = SHARED_SCOPE if shared else f"tenant:{tenant}"
    parts = [worker_type, model, prompt_version, normalise_input(input_text), scope]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def parse_lookup(reply: Any) -> Lookup:
    """The reply of a queued lookup (see ResultCache.queue_lookup)."""
    code, payload = int(reply[0]), reply[1]
    if code == 1:
        data = json.loads(payload)
        return Hit(
            output=data["output"],
            cost_usd=float(data["cost_usd"]),
            model=data.get("model", ""),
            stored_at=float(data.get("stored_at", 0.0)),
        )
    if code == 2:
        return Lease(payload.decode() if isinstance(payload, bytes) else str(payload))
    return Wait(max(0, int(payload)))


class ResultCache:
    """Validated results in Redis. The client is injected, one per process.

    poll_s / max_poll_s: how often a waiter looks again (doubling, with jitter).
    """

    def __init__(self, client: redis.Redis, poll_s: float = 0.01, max_poll_s: float = 0.1) -> None:
        self._r = client
        self._poll_s = poll_s
        self._max_poll_s = max_poll_s
        self._lookup = load_script(client, "cache_lookup")
        self._store = load_script(client, "cache_store")
        self._abandon = load_script(client, "cache_abandon")

    def lookup_or_lease(self, key: str, lease_ms: int) -> Lookup:
        """A hit, or the lease to compute the entry, or Wait when someone else holds it.

        lease_ms: how long the provider call may take; a lease outliving its holder blocks
        waiters that long.
        """
        return parse_lookup(one_reply(self._r, lambda trip: self.queue_lookup(trip, key, lease_ms)))

    def queue_lookup(
        self, trip: RoundTrip, key: str, lease_ms: int, token: str | None = None
    ) -> int:
        """Queue the lookup; read the reply at the index returned with parse_lookup.

        token: the caller's lease token; a stable one (say, the call's id) lets a
        redelivered call take back the lease its dead first delivery held.
        """
        return trip.script(
            self._lookup,
            [keys.cache_entry(key), keys.cache_lease(key)],
            [token or secrets.token_hex(16), max(1, int(lease_ms))],
        )

    def get(self, key: str) -> Hit | None:
        """The entry if cached, without taking a lease."""
        raw = self._r.get(keys.cache_entry(key))
        hit = parse_lookup([1, raw]) if raw is not None else None
        return hit if isinstance(hit, Hit) else None

    def store(
        self,
        key: str,
        output: Any,
        cost_usd: float,
        ttl_s: float,
        token: str | None,
        *,
        model: str = "",
        tenant: str = "",
        now: float | None = None,
    ) -> bool:
        """Cache a VALIDATED output (JSON-serialisable) for ttl_s and end the lease.

        cost_usd: what the call cost, reported as the saving of every later hit.
        Returns whether the caller still held its lease (the value is stored either way).
        """
        done = one_reply(
            self._r,
            lambda trip: self.queue_store(
                trip, key, output, cost_usd, ttl_s, token, model=model, tenant=tenant, now=now
            ),
        )
        return int(done) == 1

    def queue_store(
        self,
        trip: RoundTrip,
        key: str,
        output: Any,
        cost_usd: float,
        ttl_s: float,
        token: str | None,
        *,
        model: str = "",
        tenant: str = "",
        now: float | None = None,
    ) -> int:
        """Queue `store`; the reply at the index returned is 1 when the lease was still held."""
        value = {
            "output": output,
            "cost_usd": cost_usd,
            "model": model,
            # Whose call made it (even a shared entry): `fleetline tenant purge` finds it.
            "tenant": tenant,
            "stored_at": time.time() if now is None else now,
        }
        return trip.script(
            self._store,
            [keys.cache_entry(key), keys.cache_lease(key)],
            [json.dumps(value), max(1, int(ttl_s * 1000)), token or ""],
        )

    def abandon(self, key: str, token: str) -> bool:
        """Give the lease up (the call failed) so a waiter takes over at once."""
        return int(one_reply(self._r, lambda trip: self.queue_abandon(trip, key, token))) == 1

    def queue_abandon(self, trip: RoundTrip, key: str, token: str) -> int:
        """Queue `abandon`; the reply at the index returned is 1 when the lease was held."""
        return trip.script(self._abandon, [keys.cache_lease(key)], [token])

    def wait_for(self, key: str, timeout_s: float, lease_ms: int) -> Lookup:
        """Wait up to timeout_s for another caller's value.

        Returns the Hit, a Lease when the holder died or gave up (this caller takes over),
        or Wait when the time ran out first.
        """
        deadline = time.monotonic() + timeout_s
        delay = self._poll_s
        while True:
            found = self.lookup_or_lease(key, lease_ms)
            left = deadline - time.monotonic()
            if not isinstance(found, Wait) or left <= 0:
                return found
            time.sleep(min(left, delay * random.uniform(0.5, 1.0)))
            delay = min(self._max_poll_s, delay * 2)
