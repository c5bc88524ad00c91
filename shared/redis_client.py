"""Redis clients with short timeouts: a dead Redis must fail fast, never stall a caller."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from fleetline.shared.celery_app import redis_target
from fleetline.shared.settings import FleetlineSettings


def make_redis(settings: FleetlineSettings, *, timeout_s: float | None = None) -> redis.Redis:
    """A pooled client for the state store; `timeout_s` bounds every command."""
    timeout = timeout_s if timeout_s is not None else settings.redis.socket_timeout_s
    return redis_target(settings).client(
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, settings.redis.connect_timeout_s),
        max_connections=settings.redis.max_connections,
        # One quick retry rides out a dropped connection; more would stall the caller.
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=1),
        health_check_interval=25,
    )
