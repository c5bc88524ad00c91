"""Put a dead letter back on its queue: byte for byte as it first arrived, or re-sent.

Most letters keep the raw message. A poison subtask's letter keeps only its arguments
(`{"args": [payload]}`): it is sent again as a new message of the same task, to the same
queue, with the same task id.
"""

from __future__ import annotations

import base64

from celery import Celery

from fleetline.shared.deadletters import DeadLetter


def replay(app: Celery, letter: DeadLetter) -> None:
    """Publish the stored message again to the queue it came from."""
    message = letter.message
    queue = letter.queue
    if not queue:
        raise ValueError(f"dead letter {letter.id} has no queue to replay to")
    if "body_b64" not in message:
        if "args" not in message or not letter.task:
            raise ValueError(f"dead letter {letter.id} holds neither a message nor arguments")
        app.send_task(
            letter.task,
            args=message["args"],
            kwargs=message.get("kwargs") or {},
            queue=queue,
            task_id=letter.task_id or None,
        )
        return
    properties = {
        k: v
        for k, v in message.get("properties", {}).items()
        if k in ("correlation_id", "reply_to")
    }
    with app.producer_or_acquire() as producer:
        producer.publish(
            base64.b64decode(message["body_b64"]),
            exchange=queue,
            routing_key=queue,
            content_type=message.get("content_type"),
            content_encoding=message.get("content_encoding"),
            headers=message.get("headers", {}),
            retry=True,
            **properties,
        )
