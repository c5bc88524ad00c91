"""Put a dead letter back on its queue, byte for byte as it first arrived."""

from __future__ import annotations

import base64

from celery import Celery

from shared.deadletters import DeadLetter


def replay(app: Celery, letter: DeadLetter) -> None:
    """Publish the stored message again to the queue it came from."""
    message = letter.message
    queue = letter.queue
    if not queue:
        raise ValueError(f"dead letter {letter.id} has no queue to replay to")
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
