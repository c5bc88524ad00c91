"""The dead-letter store: messages that cannot be run go here, with the reason, not away.

A poison message (undecodable body, unknown task name, a subtask that kills its process
every time) is stored once and acknowledged, so it neither loops nor blocks other jobs.
Entries keep the raw message, so `replay` can put it back on its queue unchanged.

Items of a queue's Redis list that are not messages at all (not JSON, JSON that is not a
kombu envelope) are stored by the transport (`shared/transport.py`) as `raw_item`s: the
list item's own bytes in `body_b64`, bounded by MAX_RAW_BYTES.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from fleetline.shared import keys

# The most bytes of a garbage list item a dead letter keeps (its size is noted).
MAX_RAW_BYTES = 64 * 1024


@dataclass(frozen=True)
class DeadLetter:
    """One dead message: why, which task, and the message as it was."""

    id: str
    reason: str
    detail: str
    queue: str
    task: str
    task_id: str
    at: float
    message: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reason": self.reason,
            "detail": self.detail,
            "queue": self.queue,
            "task": self.task,
            "task_id": self.task_id,
            "at": self.at,
            "message": self.message,
        }


def raw_message(
    body: bytes | str,
    content_type: str | None,
    content_encoding: str | None,
    headers: dict[str, Any],
    properties: dict[str, Any],
) -> dict[str, Any]:
    """A message in a JSON-safe form that can be published again byte for byte."""
    data = body.encode() if isinstance(body, str) else body
    return {
        "body_b64": base64.b64encode(data).decode(),
        "content_type": content_type,
        "content_encoding": content_encoding,
        "headers": json.loads(json.dumps(headers, default=repr)),
        "properties": json.loads(json.dumps(properties, default=repr)),
    }


def raw_item(item: bytes) -> dict[str, Any]:
    """A Redis list item that is not a message, as it was: its bytes in `body_b64` (so
    `dlq show` prints them), its size, and `truncated` past MAX_RAW_BYTES."""
    message = raw_message(item[:MAX_RAW_BYTES], None, None, {}, {})
    message.update(raw_item=True, size=len(item), truncated=len(item) > MAX_RAW_BYTES)
    return message


class DeadLetterStore:
    """Dead letters in a capped Redis stream."""

    def __init__(self, client: redis.Redis, max_entries: int) -> None:
        self._r = client
        self._max = max_entries

    def add(
        self,
        reason: str,
        detail: str,
        queue: str,
        task: str,
        task_id: str,
        message: dict[str, Any],
    ) -> str:
        fields = {
            "reason": reason,
            "detail": detail[:2000],
            "queue": queue,
            "task": task,
            "task_id": task_id,
            "at": repr(time.time()),
            "message": json.dumps(message),
        }
        entry_id = self._r.xadd(
            keys.dead_letters(),
            fields,  # type: ignore[arg-type]
            maxlen=self._max,
            approximate=True,
        )
        # On a pipeline (a caller's transaction) the id is known only once it executes.
        return "" if isinstance(self._r, redis.client.Pipeline) else _text(entry_id)

    def list(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters first."""
        rows = self._r.xrevrange(keys.dead_letters(), count=limit) or []
        return [_entry(entry_id, fields) for entry_id, fields in rows]

    def get(self, entry_id: str) -> DeadLetter | None:
        rows = self._r.xrange(keys.dead_letters(), entry_id, entry_id) or []
        return _entry(*rows[0]) if rows else None

    def delete(self, entry_id: str) -> bool:
        return bool(self._r.xdel(keys.dead_letters(), entry_id))

    def purge(self) -> int:
        count = int(self._r.xlen(keys.dead_letters()))
        self._r.delete(keys.dead_letters())
        return count

    def count(self) -> int:
        return int(self._r.xlen(keys.dead_letters()))


def _entry(entry_id: Any, raw: Any) -> DeadLetter:
    fields = {_text(k): _text(v) for k, v in (raw or {}).items()}
    return DeadLetter(
        id=_text(entry_id),
        reason=fields.get("reason", ""),
        detail=fields.get("detail", ""),
        queue=fields.get("queue", ""),
        task=fields.get("task", ""),
        task_id=fields.get("task_id", ""),
        at=float(fields.get("at", "0")),
        message=json.loads(fields.get("message", "{}")),
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
