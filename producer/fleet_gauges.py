"""The fleet-wide gauges `fleetline exporter` serves, read from Redis at each scrape.

One scrape target shows the whole fleet, however many hosts run it: every queue's depth
(all of kombu's priority lists summed, plus the messages workers hold unacked), every
breaker's state, and the spend of the current UTC hour and day of the fleet, each agent
and tool, each model and each tenant named in a limit, with the limits that apply. A
tenant under the `*` default only is not a label of its own (tenants are unbounded).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from kombu.transport.redis import Channel
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from fleetline.shared.breakers import BreakerState, RedisBreakers
from fleetline.shared.celery_app import PRIORITY_STEPS, fleet_queues, priority_lists
from fleetline.shared.errors import StoreUnavailable
from fleetline.shared.ledger import Ledger, ScopeKind, SpendReport, SpendSettings, Window
from fleetline.shared.settings import FleetlineSettings

# fleetline_breaker_state: ordered by severity, so that max() over breakers is the worst.
BREAKER_VALUES = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}
# kombu's hash of delivered, not yet acked messages: [envelope, exchange, routing key].
UNACKED = Channel.unacked_key


def queue_depths(client: redis.Redis, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each queue's priority lists plus those held unacked."""
    names = list(queues)
    pipe = client.pipeline(transaction=False)
    for queue in names:
        for key in priority_lists(queue):
            pipe.llen(key)
    lengths = pipe.execute()
    step = len(PRIORITY_STEPS)
    depths = {q: sum(lengths[i * step : (i + 1) * step]) for i, q in enumerate(names)}
    held = Counter(_routing_key(v) for _, v in client.hscan_iter(UNACKED, count=1000))
    for queue in names:
        depths[queue] += held.get(queue, 0)
    return depths


def _routing_key(entry: Any) -> str:
    try:
        item = json.loads(entry)
        return str(item[2])
    except (ValueError, TypeError, IndexError, KeyError):
        return ""


def spend_scopes(report: SpendReport, settings: FleetlineSettings) -> list[str]:
    """The scopes of the spend gauges: the fleet, each worker type, each model spent on,
    and each tenant a limit names."""
    limits = settings.spend
    tenants = {*limits.tenant_hourly_usd, *limits.tenant_daily_usd} - {"*"}
    types = {*settings.fleet.worker_types, *report.by("agent")}
    return [
        "fleet",
        *(f"{ScopeKind.WORKER_TYPE.value}:{n}" for n in sorted(types)),
        *(f"model:{n}" for n in sorted(report.by("model"))),
        *(f"{ScopeKind.TENANT.value}:{n}" for n in sorted(tenants)),
    ]


def scope_limit(limits: SpendSettings, scope: str, window: Window) -> float | None:
    """The limit of one scope label in one window (None: none applies)."""
    kind, _, name = scope.partition(":")
    if kind not in {k.value for k in ScopeKind}:
        return None  # models have no limits of their own
    return limits.limit(ScopeKind(kind), name, window)


class FleetGauges:
    """A collector for the exporter's registry: every read is one scrape's."""

    def __init__(
        self, settings: FleetlineSettings, client: redis.Redis, breakers: RedisBreakers
    ) -> None:
        self._settings = settings
        self._redis = client
        self._breakers = breakers
        self._ledger = Ledger(client)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "fleetline_exporter_redis_up", "Whether this scrape could read the fleet's Redis."
        )
        try:
            found = list(self._read())
        except (redis.RedisError, StoreUnavailable):
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from found

    def _read(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "fleetline_queue_depth",
            "Messages in each queue: every priority list, plus those workers hold unacked.",
            labels=["queue"],
        )
        for queue, count in queue_depths(self._redis, fleet_queues(self._settings)).items():
            depth.add_metric([queue], float(count))
        yield depth
        state = GaugeMetricFamily(
            "fleetline_breaker_state",
            "Each circuit breaker's state: 0 closed, 1 half-open, 2 open.",
            labels=["breaker"],
        )
        for snapshot in self._breakers.list_breakers():
            state.add_metric([snapshot.name], BREAKER_VALUES[snapshot.state])
        yield state
        yield from self._spend()

    def _spend(self) -> Iterator[Metric]:
        spent = GaugeMetricFamily(
            "fleetline_spend_usd",
            "Spent in the current UTC hour or day, by scope (fleet, worker_type:, model:, "
            "tenant:).",
            labels=["scope", "window"],
        )
        limit = GaugeMetricFamily(
            "fleetline_spend_limit_usd",
            "The spend limit of each scope and window that has one.",
            labels=["scope", "window"],
        )
        now = time.time()
        for window in Window:
            report = self._ledger.spend_report(window, now)
            for scope in spend_scopes(report, self._settings):
                used = report.scopes.get(scope)
                spent.add_metric([scope, window.value], used.spent_usd if used else 0.0)
                cap = scope_limit(self._settings.spend, scope, window)
                if cap is not None:
                    limit.add_metric([scope, window.value], cap)
        yield spent
        yield limit
