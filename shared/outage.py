"""Riding out a short Redis outage: retry a step until Redis is back, for a bounded time."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from redis.exceptions import RedisError

log = logging.getLogger(__name__)

T = TypeVar("T")


def through_outage(step: Callable[[], T], grace_s: float, what: str) -> T:
    """Run `step`, retrying on Redis errors with backoff until `grace_s` has passed.

    The last error is raised once the grace is spent, so the caller can fall back to
    redelivery.
    """
    give_up_at = time.monotonic() + grace_s
    delay = 0.1
    while True:
        try:
            return step()
        except RedisError as exc:
            if time.monotonic() + delay > give_up_at:
                raise
            log.warning("Redis unavailable during %s, retrying in %.1fs: %s", what, delay, exc)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
