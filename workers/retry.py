"""How long to wait before the next attempt: the provider's word first, else backoff."""

from __future__ import annotations

import random

from fleetline.shared.errors import RetryableStepError
from fleetline.shared.policy import WorkerPolicy


def retry_delay_s(exc: RetryableStepError, attempt: int, policy: WorkerPolicy) -> float:
    """Retry-After when the provider sent one, else exponential backoff with full jitter.

    Jitter keeps a fleet of workers that failed together from retrying together.
    """
    if exc.retry_after_s is not None:
        return min(max(exc.retry_after_s, 0.0), policy.retry_backoff_max_s)
    ceiling = min(policy.retry_backoff_max_s, policy.retry_backoff_s * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)
