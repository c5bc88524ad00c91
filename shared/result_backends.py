"""A result backend for processes that send tasks and never wait on their results.

Celery's Redis backend subscribes to a result channel for every task sent, and again for
every header of a group (its completion barrier), so that `AsyncResult.get()` can be
woken: one SUBSCRIBE per subtask, and an UNSUBSCRIBE when the result object is collected.
The producer never waits on a result (it polls the state store), so it skips all of that.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend, SentinelBackend


class _SendOnly:
    """Result subscriptions skipped: results cannot be awaited."""

    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None

    def add_pending_result(
        self, result: Any, weak: bool = False, start_drainer: bool = True
    ) -> Any:
        return result

    def add_pending_results(self, results: Any, weak: bool = False) -> list[Any]:
        return list(results)

    def remove_pending_result(self, result: Any) -> Any:
        return result


class SendOnlyRedisBackend(_SendOnly, RedisBackend):  # type: ignore[misc]
    """The Redis result backend without result subscriptions."""


class SendOnlySentinelBackend(_SendOnly, SentinelBackend):  # type: ignore[misc]
    """The same on a Sentinel group's master."""
