"""A result backend for processes that send tasks and never wait on their results.

Celery's Redis backend subscribes to a result channel for every task sent (one SUBSCRIBE
per subtask) so that `AsyncResult.get()` can be woken; the producer never calls it (it
polls the state store), so its sends skip that round trip.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend


class SendOnlyRedisBackend(RedisBackend):  # type: ignore[misc]
    """The Redis result backend without per-task result subscriptions."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None
