"""The spend ledger: reserve a call's worst case before it runs, settle what it cost after.

Every reservation and every settlement is one Lua script (one round trip), so concurrent
workers can never reserve past a limit: a reservation that would take any scope's
spent + reserved past its limit is refused whole, naming the limit and its headroom.
Windows are calendar-aligned UTC hours and days; amounts are kept as integer nano-USD.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Container, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

import redis
from pydantic import Field, NonNegativeFloat
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetline.shared import keys
from fleetline.shared.batched_reads import read_each, scan_names
from fleetline.shared.rate_limits import RateLimit, rate_arguments
from fleetline.shared.round_trip import RoundTrip, one_reply
from fleetline.shared.scripts import load_script

NANO = 1_000_000_000
SavingKind = Literal["cache", "tiering"]
GroupBy = Literal["agent", "model", "tenant", "job"]


class Window(StrEnum):
    HOUR = "hour"
    DAY = "day"

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def seconds(self) -> int:
        return 3600 if self is Window.HOUR else 86_400


def window_bounds(window: Window, now: float) -> tuple[str, float, float]:
    """(bucket, start, end) of the UTC hour or day holding `now`; bucket: 2026112522/20261125."""
    return _bounds(window, math.floor(now / window.seconds) * window.seconds)


@functools.lru_cache(maxsize=64)  # every reservation asks; the answer changes once an hour
def _bounds(window: Window, start: int) -> tuple[str, float, float]:
    fmt = "%Y%m%d%H" if window is Window.HOUR else "%Y%m%d"
    return datetime.fromtimestamp(start, UTC).strftime(fmt), start, start + window.seconds


class ScopeKind(StrEnum):
    JOB = "job"
    TENANT = "tenant"
    WORKER_TYPE = "worker_type"
    FLEET = "fleet"


@dataclass(frozen=True)
class Scope:
    """Something spend is counted against, with its limits (None = unlimited)."""

    kind: ScopeKind
    name: str = ""
    hourly_usd: float | None = None
    daily_usd: float | None = None
    # Lifetime budgets: a job's whole run.
    budget_usd: float | None = None
    budget_tokens: int | None = None

    @property
    def label(self) -> str:
        return "fleet" if self.kind is ScopeKind.FLEET else f"{self.kind.value}:{self.name}"


class SpendSettings(BaseSettings):
    """Spend limits in USD; None, or a name missing from a dict, means unlimited.

    Per-name limits are JSON objects, e.g. FLEETLINE_SPEND_TENANT_DAILY_USD='{"acme": 50,
    "*": 10}'; the "*" entry applies to every name not listed.
    """

    model_config = SettingsConfigDict(env_prefix="FLEETLINE_SPEND_", extra="ignore")

    hourly_usd: NonNegativeFloat | None = None
    daily_usd: NonNegativeFloat | None = None
    tenant_hourly_usd: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    tenant_daily_usd: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    worker_type_hourly_usd: dict[str, NonNegativeFloat] = Field(default_factory=dict)
    worker_type_daily_usd: dict[str, NonNegativeFloat] = Field(default_factory=dict)

    def limit(self, kind: ScopeKind, name: str, window: Window) -> float | None:
        """The limit of one scope for one window, or None."""
        hourly = window is Window.HOUR
        if kind is ScopeKind.FLEET:
            return self.hourly_usd if hourly else self.daily_usd
        if kind is ScopeKind.TENANT:
            table = self.tenant_hourly_usd if hourly else self.tenant_daily_usd
        elif kind is ScopeKind.WORKER_TYPE:
            table = self.worker_type_hourly_usd if hourly else self.worker_type_daily_usd
        else:
            return None
        return table.get(name, table.get("*"))


LedgerLimits = SpendSettings


def scopes_for(
    limits: SpendSettings,
    *,
    job_id: str,
    tenant: str,
    worker_type: str,
    job_budget_usd: float | None = None,
    job_budget_tokens: int | None = None,
) -> list[Scope]:
    """The four scopes of one model call, with the limits that apply to them."""

    def windowed(kind: ScopeKind, name: str) -> Scope:
        return Scope(
            kind,
            name,
            hourly_usd=limits.limit(kind, name, Window.HOUR),
            daily_usd=limits.limit(kind, name, Window.DAY),
        )

    return [
        Scope(ScopeKind.JOB, job_id, budget_usd=job_budget_usd, budget_tokens=job_budget_tokens),
        windowed(ScopeKind.TENANT, tenant),
        windowed(ScopeKind.WORKER_TYPE, worker_type),
        windowed(ScopeKind.FLEET, ""),
    ]


def to_nano(usd: float) -> int:
    return round(usd * NANO)


@dataclass(frozen=True)
class Refusal:
    """The limit a reservation would have passed."""

    scope: str  # fleet, tenant:X, worker_type:Y, job:J
    window: str  # hour, day, lifetime
    metric: str  # usd, tokens
    limit: float
    spent: float
    reserved: float
    requested: float

    @property
    def headroom(self) -> float:
        return max(0.0, self.limit - self.spent - self.reserved)

    def __str__(self) -> str:
        return (
            f"{self.scope} {self.window} {self.metric} limit {self.limit:g} reached: "
            f"headroom {self.headroom:g}, call needs {self.requested:g}"
        )


@dataclass(frozen=True)
class Reservation:
    """ok: the worst case is held. duplicate: the call id had a record already (state).

    retry_after_s: set when only the rate window refused (state `rate_limited`): when the
    next one opens.
    """

    ok: bool
    state: str
    duplicate: bool = False
    refusal: Refusal | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True)
class Settlement:
    """applied: this call changed the ledger; state: the record's state before it."""

    applied: bool
    state: str


@dataclass(frozen=True)
class ScopeSpend:
    spent_usd: float = 0.0
    reserved_usd: float = 0.0
    spent_tokens: int = 0
    reserved_tokens: int = 0
    calls: int = 0
    saved_cache_usd: float = 0.0
    saved_tiering_usd: float = 0.0
    # Charged beyond the calls' holds: a provider reported more than the bound allowed.
    overrun_usd: float = 0.0


@dataclass(frozen=True)
class SpendReport:
    """Spend of one UTC window, by scope label (fleet, tenant:X, worker_type:Y, model:M, job:J)."""

    window: Window
    bucket: str
    starts_at: float
    ends_at: float
    scopes: dict[str, ScopeSpend] = field(default_factory=dict)

    def by(self, group: GroupBy) -> dict[str, ScopeSpend]:
        """Spend per worker type (`agent`), model, tenant or job."""
        prefix = "worker_type:" if group == "agent" else f"{group}:"
        return {k[len(prefix) :]: v for k, v in self.scopes.items() if k.startswith(prefix)}

    @property
    def fleet(self) -> ScopeSpend:
        return self.scopes.get("fleet", ScopeSpend())

    @property
    def saved_by_cache(self) -> float:
        return self.fleet.saved_cache_usd

    @property
    def saved_by_tiering(self) -> float:
        return self.fleet.saved_tiering_usd


@dataclass(frozen=True)
class Hold:
    """How long a reservation holds its worst case, and how long the ledger keeps what it
    writes for the call (see keys.SPEND_CALL_MARGIN_S and keys.SPEND_JOB_TTL_S).

    seconds: the hold (given back this long after it was taken, when never settled).
    record_s: the call record's TTL. job_until: the job's deadline (epoch seconds; its
    counter lives at least until then). job_keep_s: the finished-job TTL plus
    keys.SPEND_JOB_MARGIN_S (its counter lives at least that long past each reservation
    and settlement); None: keys.SPEND_JOB_TTL_S from each reservation.
    """

    seconds: float
    record_s: int
    job_until: float = 0.0
    job_keep_s: int | None = None

    @classmethod
    def of(cls, seconds: float) -> Hold:
        """A hold given only in seconds (a caller without the settings)."""
        extra = math.ceil(seconds) + keys.SPEND_CALL_DEFAULT_EXTRA_S
        return cls(seconds, max(keys.SPEND_CALL_TTL_S, extra))

    def job_ttl_s(self, now: float) -> int:
        """The TTL the job's counter keeps at least from a reservation at `now`."""
        if self.job_keep_s is None:
            return keys.SPEND_JOB_TTL_S
        return max(math.ceil(self.job_until - now), self.job_keep_s)


def plan_counters(
    scopes: Sequence[Scope], model: str, now: float, job_ttl_s: int = keys.SPEND_JOB_TTL_S
) -> tuple[list[str], list[int], list[list[Any]]]:
    """The counter keys (with TTLs) a reservation touches, and each counter's limits.

    Counters are checked in order: job lifetime, then every scope's hour, then its day.
    A job is counted in its own counter only: the windows stay as small as the fleet's
    tenants, worker types and models, however many jobs a day runs. Each counter says
    whether the call's hold is counted in it: where a limit reads it, and the fleet's
    (the report's reserved line); elsewhere a hold would be two writes nothing reads.
    job_ttl_s: the least TTL the job's counter keeps.
    """
    jobs = [s for s in scopes if s.kind is ScopeKind.JOB]
    counter_keys = list(dict.fromkeys(keys.spend_job(s.name) for s in jobs))
    # KEYS[1], KEYS[2] are the call and the holds: counter keys start at KEYS[3].
    counters = [
        _counter(
            3 + counter_keys.index(keys.spend_job(s.name)),
            s.label,
            _cap(s.budget_usd),
            -1 if s.budget_tokens is None else s.budget_tokens,
            "lifetime",
        )
        for s in jobs
    ]
    ttls = [job_ttl_s] * len(counter_keys)
    bounds = tuple(window_bounds(window, now) for window in Window)
    others = tuple(s for s in scopes if s.kind is not ScopeKind.JOB)
    first = 3 + len(counter_keys)
    for (_, _, end), (key, planned) in zip(
        bounds, _window_plans(others, model, bounds), strict=True
    ):
        counters += [[first, *c] for c in planned]
        counter_keys.append(key)
        ttls.append(math.ceil(end - now) + keys.SPEND_WINDOW_GRACE_S)
        first += 1
    return counter_keys, ttls, counters


def _cap(usd: float | None) -> int:
    return -1 if usd is None else to_nano(usd)


def _counter(i: int, label: str, usd: int, tokens: int, window: str) -> list[Any]:
    """One counter of a plan; it holds the call where a limit reads it, and the fleet's."""
    holds = usd >= 0 or tokens >= 0 or label == "fleet"
    return [i, label, usd, tokens, window, int(holds)]


@functools.lru_cache(maxsize=1024)  # the fleet's scopes and models are few; jobs are not here
def _window_plans(
    scopes: tuple[Scope, ...], model: str, bounds: tuple[tuple[str, float, float], ...]
) -> tuple[tuple[str, tuple[tuple[Any, ...], ...]], ...]:
    """Each window's key and counters (without their key index), for plan_counters."""
    plans = []
    for window, (bucket, _, _) in zip(Window, bounds, strict=True):
        limits = [s.hourly_usd if window is Window.HOUR else s.daily_usd for s in scopes]
        counters = [
            _counter(0, s.label, _cap(usd), -1, window.value)[1:]
            for s, usd in zip(scopes, limits, strict=True)
        ]
        if model:
            counters.append(_counter(0, f"model:{model}", -1, -1, window.value)[1:])
        if counters and not any(c[4] for c in counters):
            counters[0][4] = 1  # a hold makes the window: settlement counts only in one
        plans.append((keys.spend_window(window.code, bucket), tuple(map(tuple, counters))))
    return tuple(plans)


def parse_reserve(reply: Any, delivery: str = "") -> Reservation:
    """The reply of a queued reservation (see Ledger.queue_reserve).

    A record the same delivery took is its hold still (the reply of a first try was
    lost); another delivery's hold is never spent on: that one may have called already.
    """
    code, text = int(reply[0]), _text(reply[1])
    if code == 1:
        return Reservation(ok=True, state=text)
    if code == 2:
        mine = text == "reserved" and _text(reply[2]) == delivery
        return Reservation(ok=mine, state=text, duplicate=True)
    window, metric = _text(reply[2]), _text(reply[3])
    scale = NANO if metric == "usd" else 1
    limit, spent, held, want = (int(x) / scale for x in reply[4:8])
    refusal = Refusal(text, window, metric, limit, spent, held, want)
    if code == 3:
        return Reservation(
            False, "rate_limited", refusal=refusal, retry_after_s=int(reply[8]) / 1000
        )
    return Reservation(ok=False, state="refused", refusal=refusal)


def parse_settle(reply: Any) -> Settlement:
    """The reply of a queued settle or release."""
    return Settlement(applied=int(reply[0]) == 1, state=_text(reply[1]))


class Ledger:
    """Spend reservations and counters in Redis. The client is injected, one per process."""

    def __init__(
        self,
        client: redis.Redis,
        hold_s: float | Hold = keys.SPEND_HOLD_TTL_S,
        once_ttl_s: int = keys.CLOSING_ONCE_TTL_S,
    ) -> None:
        """once_ttl_s: how long a saving's once-marker lives (keys.closing_once_ttl_s)."""
        self._r = client
        self._hold_s = hold_s
        self._once_ttl_s = once_ttl_s
        self._reserve = load_script(client, "ledger_reserve", "ledger_lib")
        self._settle = load_script(client, "ledger_settle", "ledger_lib")
        self._release = load_script(client, "ledger_release", "ledger_lib")
        self._sweep = load_script(client, "ledger_sweep", "ledger_lib")
        self._saving = load_script(client, "ledger_saving", "ledger_lib")

    @property
    def client(self) -> redis.Redis:
        """The client the ledger runs on (for round trips that mix its scripts)."""
        return self._r

    def reserve(
        self,
        call_id: str,
        usd: float,
        tokens: int,
        scopes: Sequence[Scope],
        *,
        model: str = "",
        now: float | None = None,
        hold_s: float | Hold | None = None,
        delivery: str = "",
        rate: RateLimit | None = None,
    ) -> Reservation:
        """Hold a call's worst-case cost against every scope, or refuse and hold nothing.

        call_id: one provider call attempt (reserving it again changes nothing: the
        delivery that holds it still does, any other is refused). usd/tokens: the call's
        worst case. model: counted for the per-model report. hold_s: how long the hold
        outlives a worker that never settles (default keys.SPEND_HOLD_TTL_S), in seconds or
        as a Hold that also says how long the call's record and job counter are kept
        (workers/spend.py `hold_for` derives one from the settings). delivery:
        who takes the hold. rate: the model's per-minute limits (one request and `tokens`
        are held in the current minute too).
        """
        return parse_reserve(
            one_reply(
                self._r,
                lambda trip: self.queue_reserve(
                    trip,
                    call_id,
                    usd,
                    tokens,
                    scopes,
                    model=model,
                    now=now,
                    hold_s=hold_s,
                    delivery=delivery,
                    rate=rate,
                ),
            ),
            delivery,
        )

    def queue_reserve(
        self,
        trip: RoundTrip,
        call_id: str,
        usd: float,
        tokens: int,
        scopes: Sequence[Scope],
        *,
        model: str = "",
        now: float | None = None,
        hold_s: float | Hold | None = None,
        delivery: str = "",
        rate: RateLimit | None = None,
    ) -> int:
        """Queue the reservation; read the reply at the index returned with parse_reserve."""
        if usd < 0 or tokens < 0:
            raise ValueError("a reservation needs usd >= 0 and tokens >= 0")
        now = time.time() if now is None else now
        given = self._hold_s if hold_s is None else hold_s
        hold = given if isinstance(given, Hold) else Hold.of(given)
        counter_keys, ttls, counters = plan_counters(scopes, model, now, hold.job_ttl_s(now))
        # The record must outlive its hold, or a sweep could not give the hold back.
        record_ttl = max(hold.record_s, math.ceil(hold.seconds) + 1)
        rate_keys, rate_spec = rate_arguments(rate, now)
        tenant = next((s.name for s in scopes if s.kind is ScopeKind.TENANT), "")
        keep = "" if hold.job_keep_s is None else str(hold.job_keep_s)
        return trip.script(
            self._reserve,
            [keys.spend_call(call_id), keys.spend_holds(), *counter_keys, *rate_keys],
            [
                repr(now),
                repr(now + hold.seconds),
                record_ttl,
                to_nano(usd),
                tokens,
                json.dumps(counters),
                json.dumps(ttls),
                delivery,
                rate_spec,
                keys.spend_job_call(call_id),
                tenant,
                keep,
            ],
        )

    def settle(
        self, call_id: str, actual_usd: float, actual_tokens: int, now: float | None = None
    ) -> Settlement:
        """Charge what the call cost in place of its hold, once per call id."""
        return parse_settle(
            one_reply(
                self._r,
                lambda trip: self.queue_settle(trip, call_id, actual_usd, actual_tokens, now),
            )
        )

    def queue_settle(
        self,
        trip: RoundTrip,
        call_id: str,
        actual_usd: float,
        actual_tokens: int,
        now: float | None = None,
        saved_tiering_usd: float = 0.0,
    ) -> int:
        """Queue a settlement; read the reply at the index returned with parse_settle.

        saved_tiering_usd: what a pricier tier would have cost more, counted with the spend
        in the same script (once, like the spend).
        """
        if actual_usd < 0 or actual_tokens < 0:
            raise ValueError("a settlement needs actual_usd >= 0 and actual_tokens >= 0")
        now = time.time() if now is None else now
        return trip.script(
            self._settle,
            [keys.spend_call(call_id), keys.spend_holds()],
            [
                to_nano(actual_usd),
                actual_tokens,
                repr(now),
                to_nano(max(0.0, saved_tiering_usd)),
                keys.spend_job_call(call_id),
                keys.spend_job(""),
            ],
        )

    def release(self, call_id: str) -> Settlement:
        """Give a failed call's hold back, once. A call that cost anything is settled instead."""
        return parse_settle(one_reply(self._r, lambda trip: self.queue_release(trip, call_id)))

    def queue_release(self, trip: RoundTrip, call_id: str) -> int:
        """Queue a release; read the reply at the index returned with parse_settle."""
        return trip.script(
            self._release,
            [keys.spend_call(call_id), keys.spend_holds()],
            [keys.spend_job_call(call_id), keys.spend_job("")],
        )

    def record_saving(
        self,
        kind: SavingKind,
        usd: float,
        scopes: Sequence[Scope],
        now: float | None = None,
        *,
        once: str = "",
    ) -> None:
        """Count money not spent thanks to the cache or a cheaper tier, in one round trip.

        once: counts this saving at most once per value (a delivery); empty counts it
        every time.
        """
        trip = RoundTrip(self._r)
        self.queue_record_saving(trip, kind, usd, scopes, now, once=once)
        trip.execute()

    def queue_record_saving(
        self,
        pipe: redis.Redis,
        kind: SavingKind,
        usd: float,
        scopes: Sequence[Scope],
        now: float | None = None,
        model: str = "",
        *,
        once: str = "",
    ) -> None:
        """Queue `record_saving` on a pipeline (its reply carries nothing to read).

        once: the delivery the saving belongs to: a round trip run again after Redis lost
        its reply (the closing trip, through_outage) counts it once. Empty: no marker.
        """
        now = time.time() if now is None else now
        counter_keys, ttls, counters = plan_counters(scopes, model, now)
        # plan_counters numbers keys from KEYS[3] (a reservation's call and holds come
        # first); this script's counters start at KEYS[1].
        fields = [[c[0] - 2, f"{c[1]}|saved_{kind}_usd"] for c in counters]
        marker = [keys.spend_saving_once(once, kind)] if once else []
        self._saving(
            keys=[*counter_keys, *marker],
            args=[
                to_nano(usd),
                json.dumps(fields),
                json.dumps(ttls),
                self._once_ttl_s if once else 0,
            ],
            client=pipe,
        )

    def spend_report(self, window: Window | str, now: float | None = None) -> SpendReport:
        """Spent and reserved per scope in the UTC hour or day holding `now`."""
        window = Window(window)
        now = time.time() if now is None else now
        bucket, start, end = window_bounds(window, now)
        pipe = self._r.pipeline(transaction=False)
        self._sweep(keys=[keys.spend_holds()], args=[repr(now)], client=pipe)
        pipe.hgetall(keys.spend_window(window.code, bucket))
        _, raw = pipe.execute()
        return SpendReport(window, bucket, start, end, _scopes(raw))

    def job_spend(self, job_id: str) -> ScopeSpend:
        """A job's lifetime spend (and its holds, when it has a budget to read them)."""
        return _scopes(self._r.hgetall(keys.spend_job(job_id))).get(f"job:{job_id}", ScopeSpend())

    def job_spends(self) -> dict[str, ScopeSpend]:
        """Every kept job's lifetime spend, by job id (one SCAN: for operator commands).

        The hour and day windows do not count jobs (they would grow with every job); a
        job's counter lives as long as the job does.
        """
        prefix = keys.spend_job("")
        names = scan_names(self._r, keys.spend_job("*"))
        found: dict[str, ScopeSpend] = {}
        for key, raw in read_each(self._r, names, lambda pipe, key: pipe.hgetall(key)):
            job_id = key[len(prefix) :]
            found[job_id] = _scopes(raw).get(f"job:{job_id}", ScopeSpend())
        return found

    def call_records(self, call_ids: Iterable[str]) -> dict[str, CallRecord]:
        """The records of these call ids that exist (read only, READ_BATCH a round trip).

        A call whose record is gone (its TTL is short) is read from what its job's counter
        keeps of it (state, charge, tenant) while that counter lives: as long as the job.
        """
        replies = read_each(
            self._r, call_ids, lambda pipe, call_id: pipe.hgetall(keys.spend_call(call_id))
        )
        found, gone = {}, []
        for call_id, raw in replies:
            record = parse_call_record(call_id, raw)
            if record is None:
                gone.append(call_id)
            else:
                found[call_id] = record
        found.update(self._kept_calls(gone))
        return found

    def _kept_calls(self, call_ids: Sequence[str]) -> dict[str, CallRecord]:
        """What the jobs' counters keep of these call ids: each id is looked for under
        every job its `<job>:` prefixes could name."""
        tried = [(call_id, job) for call_id in call_ids for job in _job_prefixes(call_id)]

        def read(pipe: Any, i: str) -> None:
            call_id, job = tried[int(i)]
            pipe.hmget(keys.spend_job(job), keys.spend_job_call(call_id), "tenant")

        found: dict[str, CallRecord] = {}
        for i, (kept, tenant) in read_each(self._r, map(str, range(len(tried))), read):
            call_id, job = tried[int(i)]
            if kept is not None and call_id not in found:
                found[call_id] = parse_kept_call(call_id, job, _text(kept), _text(tenant or ""))
        return found

    def job_call_ids(self, job_ids: Iterable[str], limit: int = 100_000) -> dict[str, list[str]]:
        """Each job's call ids: those of the records that start with `<job_id>:`, at most
        `limit` a job (one SCAN of the ledger's records, whatever the number of jobs: for
        operator commands).

        Call ids are `<job>:<step>:<attempt>:<model>[...]`; the records' own job scope says
        whose they are (another job's id may start with this one's, so a call id can be
        under two of the jobs).
        """
        found: dict[str, list[str]] = {job: [] for job in job_ids}
        if not found:
            return found
        # The job's counter names each of its call ids for as long as the job lives; the
        # SCAN finds the records of calls reserved before it did.
        named = keys.spend_job_call("")
        seen: dict[str, set[str]] = {job: set() for job in found}
        for job, fields in read_each(
            self._r, list(found), lambda pipe, job: pipe.hkeys(keys.spend_job(job))
        ):
            seen[job].update(f[len(named) :] for f in map(_text, fields) if f.startswith(named))
        prefix = keys.spend_call("")
        for key in scan_names(self._r, keys.spend_call("*")):
            call_id = key[len(prefix) :]
            for job in _jobs_under(call_id, found):
                seen[job].add(call_id)
        for job, call_ids in seen.items():
            found[job] = sorted(call_ids)[:limit]
        return found


@dataclass(frozen=True)
class CallRecord:
    """One call id's ledger record, read back: its state, hold and charge (USD, tokens),
    and the job, tenant and worker type it was reserved against."""

    call_id: str
    state: str  # reserved, settled, released, expired
    usd: float = 0.0
    tokens: int = 0
    actual_usd: float = 0.0
    actual_tokens: int = 0
    job_id: str = ""
    tenant: str = ""
    worker_type: str = ""

    @property
    def settled(self) -> bool:
        return self.state == "settled"


def parse_call_record(call_id: str, raw: dict[Any, Any]) -> CallRecord | None:
    """A record from its HASH fields (HGETALL), or None when there is none."""
    fields = {_text(k): _text(v) for k, v in raw.items()}
    if "state" not in fields:
        return None
    names: dict[str, str] = {}
    # [[key indexes, scope], ...] (or [[key, scope], ...] in a record of before): scopes.
    for _key, scope in json.loads(fields.get("counters") or "[]"):
        kind, _, name = str(scope).partition(":")
        names.setdefault(kind, name)
    return CallRecord(
        call_id=call_id,
        state=fields["state"],
        usd=int(fields.get("usd") or 0) / NANO,
        tokens=int(fields.get("tokens") or 0),
        actual_usd=int(fields.get("actual_usd") or 0) / NANO,
        actual_tokens=int(fields.get("actual_tokens") or 0),
        job_id=names.get(ScopeKind.JOB.value, ""),
        tenant=names.get(ScopeKind.TENANT.value, ""),
        worker_type=names.get(ScopeKind.WORKER_TYPE.value, ""),
    )


def parse_kept_call(call_id: str, job_id: str, kept: str, tenant: str = "") -> CallRecord:
    """A call read from its job's counter (keys.spend_job): `r` reserved and never
    settled (its hold has expired), `-` released, `<nano-USD>,<tokens>` settled."""
    if kept in ("r", "-"):
        state = "expired" if kept == "r" else "released"
        return CallRecord(call_id, state, job_id=job_id, tenant=tenant)
    usd, _, tokens = kept.partition(",")
    return CallRecord(
        call_id,
        "settled",
        actual_usd=int(usd) / NANO,
        actual_tokens=int(tokens or 0),
        job_id=job_id,
        tenant=tenant,
    )


def _job_prefixes(call_id: str) -> Iterator[str]:
    """Every `<job>` a call id `<job>:...` could start with."""
    end = call_id.find(":")
    while end >= 0:
        yield call_id[:end]
        end = call_id.find(":", end + 1)


def _jobs_under(call_id: str, jobs: Container[str]) -> Iterator[str]:
    """The jobs of `jobs` whose `<job>:` the call id starts with."""
    end = call_id.find(":")
    while end >= 0:
        if call_id[:end] in jobs:
            yield call_id[:end]
        end = call_id.find(":", end + 1)


def _scopes(raw: dict[Any, Any]) -> dict[str, ScopeSpend]:
    table: dict[str, dict[str, Any]] = {}
    known = ScopeSpend.__dataclass_fields__
    named = keys.spend_job_call("")
    for k, v in raw.items():
        text = _text(k)
        scope, _, metric = text.rpartition("|")
        if metric not in known or text.startswith(named):
            continue  # a job counter's tenant and call ids
        table.setdefault(scope, {})[metric] = int(v) / NANO if metric.endswith("usd") else int(v)
    return {s: ScopeSpend(**m) for s, m in table.items()}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
