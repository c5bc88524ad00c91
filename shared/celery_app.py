"""The Celery app both sides build: JSON only, late acks, one queue per agent and tool.

Why these settings: a killed pool child must not ack its message, a whole
worker's unacked messages come back after the visibility timeout, and pickle over Redis
would be remote code execution for anyone who can write to it.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue
from kombu.transport.redis import Channel

from fleetline.shared import transport
from fleetline.shared.errors import ConfigError
from fleetline.shared.names import HOUSEKEEPING_QUEUE, HOUSEKEEPING_TASKS
from fleetline.shared.redis_target import RedisTarget, with_credentials
from fleetline.shared.settings import FleetlineSettings

# kombu's Redis transport emulates priorities with one list per step; four steps keep
# BRPOP cheap while still letting urgent jobs overtake a backlog.
PRIORITY_STEPS = [0, 3, 6, 9]


def priority_lists(queue: str) -> list[str]:
    """The Redis lists kombu keeps for `queue`, one per priority step: the queue's own name
    for step 0, then `queue + "\\x06\\x16" + step` (its separator) for the others."""
    return [queue if step == 0 else f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS]


def redis_target(settings: FleetlineSettings) -> RedisTarget:
    """Where Redis is, with its credentials, or a ConfigError saying what to set."""
    s = settings.redis
    if not s.url:
        raise ConfigError("FLEETLINE_REDIS_URL is not set (fleetline up starts an embedded one)")
    password = s.password.get_secret_value() if s.password else None
    target = RedisTarget(
        with_credentials(s.url, s.username, password),
        s.sentinel_master,
        s.sentinel_password.get_secret_value() if s.sentinel_password else None,
    )
    if target.sentinel and not target.sentinel_master:
        raise ConfigError(
            "FLEETLINE_REDIS_URL is a sentinel:// URL: set FLEETLINE_REDIS_SENTINEL_MASTER "
            "to the master's name"
        )
    return target


def redis_url(settings: FleetlineSettings) -> str:
    """The Redis URL with its credentials, or a ConfigError saying how to set one."""
    return redis_target(settings).url


def _biggest_pool(settings: FleetlineSettings) -> int:
    return max(p.concurrency for p in settings.policies.values())


def _transport_options(settings: FleetlineSettings, target: RedisTarget) -> dict[str, Any]:
    biggest_pool = _biggest_pool(settings)
    sentinel: dict[str, Any] = {}
    if target.sentinel:
        sentinel = {"master_name": target.sentinel_master}
        if target.sentinel_kwargs():
            sentinel["sentinel_kwargs"] = target.sentinel_kwargs()
    return {
        **sentinel,
        "visibility_timeout": settings.celery.visibility_timeout_s,
        "unacked_restore_interval": settings.celery.unacked_restore_interval_s,
        "unacked_restore_throttle": settings.celery.unacked_restore_throttle,
        # gevent/threads pools ack from many greenlets at once; kombu's default of 10
        # connections makes acks fail and tasks redeliver.
        "max_connections": max(settings.redis.max_connections, biggest_pool * 2 + 10),
        "socket_timeout": settings.redis.socket_timeout_s,
        "socket_connect_timeout": settings.redis.connect_timeout_s,
        "priority_steps": PRIORITY_STEPS,
        "queue_order_strategy": "priority",
        "health_check_interval": 25,
    }


def queue(name: str) -> Queue:
    """The queue of one worker type (or housekeeping)."""
    # One direct exchange and routing key per queue: a queue is never bound twice.
    return Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]


def fleet_queues(settings: FleetlineSettings) -> list[str]:
    """Every queue of the bound fleet: one per agent and tool, and housekeeping."""
    return [*settings.fleet.worker_types, HOUSEKEEPING_QUEUE]


def make_celery(
    settings: FleetlineSettings, name: str = "fleetline", *, send_only: bool = False
) -> Celery:
    """Build the Celery app from settings. Builds no connection.

    `send_only` is for producers, which never wait on an AsyncResult (see result_backends).
    """
    target = redis_target(settings)
    url = target.url
    transport.register()
    backends = "fleetline.shared.result_backends"
    send_only_backend = "SendOnlySentinelBackend" if target.sentinel else "SendOnlyRedisBackend"
    backend = f"{backends}:{send_only_backend}+{url}" if send_only else url
    app = Celery(name, broker=url, backend=backend)
    options = _transport_options(settings, target)
    biggest_pool = _biggest_pool(settings)
    app.conf.update(
        accept_content=["json"],
        result_accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_retry_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        broker_transport_options=options,
        result_backend_transport_options=options,
        redis_max_connections=max(settings.redis.max_connections, biggest_pool * 2 + 10),
        redis_socket_timeout=settings.redis.socket_timeout_s,
        redis_socket_connect_timeout=settings.redis.connect_timeout_s,
        redis_retry_on_timeout=True,
        broker_connection_retry_on_startup=True,
        # Publishing (retries, chord callbacks) rides out a Redis restart of a few seconds.
        task_publish_retry_policy={
            "max_retries": 12,
            "interval_start": 0.1,
            "interval_step": 0.5,
            "interval_max": 2.0,
        },
        broker_connection_max_retries=None,
        result_expires=settings.celery.result_expires_s,
        result_extended=False,
        task_queues=[queue(name) for name in fleet_queues(settings)],
        task_default_queue=HOUSEKEEPING_QUEUE,
        # A worker type's task is named after its queue; housekeeping has a queue of its own.
        task_routes={
            **{name: {"queue": name} for name in settings.fleet.worker_types},
            **{task: {"queue": HOUSEKEEPING_QUEUE} for task in HOUSEKEEPING_TASKS},
        },
        task_create_missing_queues=False,
        worker_prefetch_multiplier=settings.celery.prefetch_multiplier,
        worker_send_task_events=settings.celery.task_events,
        task_send_sent_event=settings.celery.task_events,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        timezone="UTC",
    )
    return app
