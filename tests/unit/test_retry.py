"""Retry delays: the provider's Retry-After first, else capped exponential backoff with jitter."""

from __future__ import annotations

import pytest

from fleetline.shared.errors import (
    ModelConnectionError,
    ModelTimeout,
    ProviderServerError,
    RateLimited,
    RetryableStepError,
    RetryableToolError,
    ToolTimeout,
)
from fleetline.shared.policy import WorkerPolicy
from fleetline.workers.retry import retry_delay_s

POLICY = WorkerPolicy(tier="cheap", retry_backoff_s=0.5, retry_backoff_max_s=30.0)
DRAWS = 200


def _delays(exc: RetryableStepError, attempt: int, policy: WorkerPolicy) -> list[float]:
    return [retry_delay_s(exc, attempt, policy) for _ in range(DRAWS)]


@pytest.mark.parametrize("attempt", [1, 2, 5])
@pytest.mark.parametrize("retry_after", [0.0, 0.2, 2.5, 29.0])
def test_retry_after_is_honoured_exactly(attempt: int, retry_after: float) -> None:
    exc = RateLimited("slow down", retry_after_s=retry_after)
    assert _delays(exc, attempt, POLICY) == [retry_after] * DRAWS


@pytest.mark.parametrize("retry_after", [30.0, 31.0, 3600.0])
def test_retry_after_is_capped_at_the_backoff_maximum(retry_after: float) -> None:
    exc = RateLimited("slow down", retry_after_s=retry_after)
    assert retry_delay_s(exc, 1, POLICY) == POLICY.retry_backoff_max_s


def test_a_negative_retry_after_means_now() -> None:
    assert retry_delay_s(RateLimited(retry_after_s=-3.0), 1, POLICY) == 0.0


def test_retry_after_on_any_retryable_error_is_honoured() -> None:
    exc = ProviderServerError("503")
    exc.retry_after_s = 4.0
    assert retry_delay_s(exc, 3, POLICY) == 4.0


@pytest.mark.parametrize(
    "exc",
    [
        RateLimited("no header"),
        ProviderServerError(),
        ModelTimeout(),
        ModelConnectionError(),
        RetryableToolError("flaky"),
        ToolTimeout(),
    ],
)
@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 6])
def test_backoff_doubles_per_attempt_with_jitter_in_the_upper_half(
    exc: RetryableStepError, attempt: int
) -> None:
    ceiling = POLICY.retry_backoff_s * 2 ** (attempt - 1)
    delays = _delays(exc, attempt, POLICY)
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    # Jitter: workers that failed together do not all come back at the same instant.
    assert len(set(delays)) > DRAWS // 2


def test_later_attempts_wait_longer() -> None:
    exc = ProviderServerError()
    # The ranges [c/2, c] of consecutive attempts only touch at one point.
    for attempt in range(1, 6):
        assert max(_delays(exc, attempt, POLICY)) <= min(_delays(exc, attempt + 1, POLICY))


@pytest.mark.parametrize("attempt", [7, 8, 12, 21])
def test_backoff_is_capped_at_the_maximum(attempt: int) -> None:
    delays = _delays(ProviderServerError(), attempt, POLICY)
    cap = POLICY.retry_backoff_max_s
    assert all(cap / 2 <= d <= cap for d in delays)


def test_a_lower_cap_from_settings_applies() -> None:
    policy = WorkerPolicy(tier="cheap", retry_backoff_s=1.0, retry_backoff_max_s=3.0)
    assert all(1.5 <= d <= 3.0 for d in _delays(ModelTimeout(), 5, policy))
    capped = retry_delay_s(RateLimited(retry_after_s=10.0), 1, policy)
    assert capped == 3.0


def test_zero_backoff_retries_at_once() -> None:
    policy = WorkerPolicy(tier="cheap", retry_backoff_s=0.0)
    assert _delays(ProviderServerError(), 4, policy) == [0.0] * DRAWS
