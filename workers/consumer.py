"""A Celery consumer that dead-letters what it cannot run instead of dropping it.

Celery acknowledges an undecodable message and rejects an unknown task name with only a
log line; here each also lands in the dead-letter store with its reason and raw body.
Enabled by `worker_consumer` in the worker app.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.consumer import Consumer

from fleetline.shared.deadletters import DeadLetterStore, raw_message
from fleetline.workers.runtime import get_runtime

log = logging.getLogger(__name__)


def _store() -> DeadLetterStore:
    runtime = get_runtime()
    return DeadLetterStore(runtime.redis, runtime.settings.celery.dead_letter_max)


def dead_letter(message: Any, reason: str, detail: str) -> None:
    """Store a kombu message as a dead letter; never raise into the consumer."""
    headers = dict(message.headers or {})
    delivery = dict(message.delivery_info or {})
    try:
        _store().add(
            reason=reason,
            detail=detail,
            queue=str(delivery.get("routing_key") or delivery.get("exchange") or ""),
            task=str(headers.get("task", "")),
            task_id=str(headers.get("id", "")),
            message=raw_message(
                message.body,
                message.content_type,
                message.content_encoding,
                headers,
                dict(message.properties or {}),
            ),
        )
    except Exception:
        log.exception("could not dead-letter a %s message", reason)


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, with every refusal path routed to the dead-letter store."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        dead_letter(message, "undecodable", f"{type(exc).__name__}: {exc}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        dead_letter(message, "unknown_message", "not a Celery task message")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        dead_letter(message, "unknown_task", f"{type(exc).__name__}: {exc}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        dead_letter(message, "invalid_task", f"{type(exc).__name__}: {exc}")
        super().on_invalid_task(body, message, exc)
