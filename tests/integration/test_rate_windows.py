"""The ledger's rate windows against a real Redis: a call takes one request and its token
bound from its API key's minute, and gives back what it did not use."""

from __future__ import annotations

import pytest
import redis

from fleetline.shared import keys
from fleetline.shared.ledger import Ledger, Scope, ScopeKind
from fleetline.shared.rate_limits import RateLimit, minute_window

pytestmark = pytest.mark.integration

NOW = 1_764_000_000.0 + 10  # ten seconds into a minute
SCOPES = [Scope(ScopeKind.JOB, "j1"), Scope(ScopeKind.FLEET)]
KEY = RateLimit("openai-key", rpm=3, tpm=1_000)


def _window(client: redis.Redis, now: float = NOW) -> dict[str, int]:
    minute, _ = minute_window(now)
    raw = client.hgetall(keys.rate_window(KEY.group, minute))
    return {k.decode(): int(v) for k, v in raw.items()}


def test_a_full_token_window_refuses_with_the_time_until_the_next(
    redis_client: redis.Redis,
) -> None:
    ledger = Ledger(redis_client)
    assert ledger.reserve("c1", 0.01, 600, SCOPES, now=NOW, rate=KEY).ok
    refused = ledger.reserve("c2", 0.01, 600, SCOPES, now=NOW, rate=KEY)
    assert (refused.ok, refused.state) == (False, "rate_limited")
    assert refused.retry_after_s == pytest.approx(50.0)
    assert refused.refusal is not None and str(refused.refusal).startswith(
        "rate:openai-key minute tokens limit 1000 reached: headroom 400, call needs 600"
    )
    held = ledger.spend_report("hour", NOW).fleet.reserved_usd
    assert held == pytest.approx(0.01), "the refusal held nothing"
    # The next minute is a window of its own.
    assert ledger.reserve("c2", 0.01, 600, SCOPES, now=NOW + 50, rate=KEY).ok


def test_settling_gives_back_the_unused_tokens_and_keeps_the_request(
    redis_client: redis.Redis,
) -> None:
    ledger = Ledger(redis_client)
    assert ledger.reserve("c1", 0.01, 600, SCOPES, now=NOW, rate=KEY).ok
    assert ledger.settle("c1", 0.002, 150, now=NOW + 1).applied
    assert _window(redis_client) == {"requests": 1, "tokens": 150}
    assert ledger.reserve("c2", 0.01, 800, SCOPES, now=NOW + 2, rate=KEY).ok
    assert ledger.release("c2").applied
    assert _window(redis_client) == {"requests": 2, "tokens": 150}, "a failed call was still sent"
    assert ledger.reserve("c3", 0.01, 100, SCOPES, now=NOW + 3, rate=KEY).ok
    refused = ledger.reserve("c4", 0.01, 100, SCOPES, now=NOW + 4, rate=KEY)
    assert refused.refusal is not None and refused.refusal.metric == "requests"


def test_a_spend_refusal_wins_over_a_full_window(redis_client: redis.Redis) -> None:
    ledger = Ledger(redis_client)
    tight = [Scope(ScopeKind.JOB, "j1", budget_usd=0.01)]
    assert ledger.reserve("c1", 0.005, 1_000, tight, now=NOW, rate=KEY).ok
    refused = ledger.reserve("c2", 0.02, 10, tight, now=NOW, rate=KEY)
    assert (refused.state, refused.retry_after_s) == ("refused", None)


def test_a_swept_hold_gives_its_tokens_back(redis_client: redis.Redis) -> None:
    ledger = Ledger(redis_client)
    assert ledger.reserve("dead", 0.01, 900, SCOPES, now=NOW, hold_s=5, rate=KEY).ok
    assert ledger.reserve("c2", 0.01, 50, SCOPES, now=NOW + 6, rate=KEY).ok
    assert _window(redis_client) == {"requests": 2, "tokens": 50}
