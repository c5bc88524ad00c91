"""How long the ledger keeps a call's record and a job's counter, from the settings; what a
job's counter keeps of a call; and the memory benchmark's key families."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, cast

import pytest

from fleetline.shared import keys
from fleetline.shared.ledger import Hold, Scope, ScopeKind, parse_kept_call, plan_counters
from fleetline.shared.settings import FleetlineSettings, load_settings
from fleetline.workers.spend import HOLD_MARGIN_S, hold_for
from ops.bench.redis_probe import bytes_by_family, family

NOW = 1_800_000_000.0


def _run(settings: FleetlineSettings, worker_type: str, deadline_at: float) -> Any:
    payload = SimpleNamespace(
        subtask=SimpleNamespace(worker_type=worker_type), deadline_at=deadline_at
    )
    return SimpleNamespace(runtime=SimpleNamespace(settings=settings), payload=payload)


def test_a_steps_hold_keeps_its_record_past_any_redelivery_and_its_job_past_the_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S": "200",
        "FLEETLINE_CELERY_UNACKED_RESTORE_INTERVAL_S": "5",
        "FLEETLINE_LIMITS_FINISHED_TTL_S": "120",
        "FLEETLINE_REDIS_OUTAGE_GRACE_S": "10",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    worker_type = next(iter(settings.fleet.worker_types))
    policy = settings.worker(worker_type)
    hold = hold_for(cast(Any, _run(settings, worker_type, NOW + 600)))
    seconds = max(policy.time_limit_s, policy.max_call_s) + HOLD_MARGIN_S
    assert hold.seconds == seconds
    assert hold.record_s == math.ceil(200 + 5 + seconds + 10 + keys.SPEND_CALL_MARGIN_S)
    assert hold.record_s < keys.SPEND_HOLD_TTL_S + keys.SPEND_CALL_DEFAULT_EXTRA_S
    # To the deadline while the job may still reserve; then the finished-job TTL.
    assert hold.job_ttl_s(NOW) == 600
    assert hold.job_ttl_s(NOW + 590) == 120 + keys.SPEND_JOB_MARGIN_S


def test_a_hold_in_seconds_gets_the_default_extra_and_the_fixed_job_ttl() -> None:
    assert Hold.of(60).record_s == keys.SPEND_CALL_TTL_S
    assert Hold.of(5_000).record_s == 5_000 + keys.SPEND_CALL_DEFAULT_EXTRA_S
    assert Hold.of(60).job_ttl_s(NOW) == keys.SPEND_JOB_TTL_S
    assert keys.SPEND_CALL_TTL_S < 86_400, "no longer a fixed day"


def test_the_job_counter_gets_the_ttl_the_hold_asks_for() -> None:
    scopes = [Scope(ScopeKind.JOB, "j1"), Scope(ScopeKind.FLEET)]
    counter_keys, ttls, _ = plan_counters(scopes, "", NOW, job_ttl_s=180)
    assert counter_keys[0] == keys.spend_job("j1")
    assert ttls[0] == 180


@pytest.mark.parametrize(
    ("kept", "state", "usd", "tokens"),
    [("250000000,1200", "settled", 0.25, 1200), ("r", "expired", 0.0, 0), ("-", "released", 0, 0)],
)
def test_a_call_kept_in_its_jobs_counter_reads_back(
    kept: str, state: str, usd: float, tokens: int
) -> None:
    record = parse_kept_call("j1:s:1:m", "j1", kept, "acme")
    assert (record.state, record.actual_usd, record.actual_tokens) == (state, usd, tokens)
    assert (record.job_id, record.tenant, record.settled) == ("j1", "acme", state == "settled")


def test_key_families_blank_the_fleets_names_and_what_follows_an_id() -> None:
    names = frozenset({"extraction", "sim-small"})
    assert family("fl:{spend}:call:<id>:extract-d#:#:sim-small", names) == "fl:{spend}:call:<id>"
    assert family("fl:job:{<id>}:trace", names) == "fl:job:{<id>}:trace"
    assert (
        family("fl:{breaker}:extraction:sim-small:once:<id>", names)
        == "fl:{breaker}:<name>:<name>:once:<id>"
    )
    assert family("fl:{spend}:call:<id>:synthesis:#:sim-long") == "fl:{spend}:call:<id>"
    assert family("celery-task-meta-<id>") == "celery-task-meta-<id>"


def test_bytes_per_job_by_family_add_new_keys_and_growth_biggest_first() -> None:
    new = {
        "by_pattern": {
            "fl:{spend}:call:<id>:synthesis:#:m": {"bytes": 4_000},
            "fl:{spend}:call:<id>:analyse-#:#:m": {"bytes": 4_000},
            "fl:job:{<id>}": {"bytes": 2_000},
        }
    }
    grew = {"by_pattern": {"fl:{spend}:d:#": 1_000, "fl:{spend}:h:#": 0}}
    assert bytes_by_family(new, grew, 10, frozenset({"m"})) == {
        "fl:{spend}:call:<id>": 800,
        "fl:job:{<id>}": 200,
        "fl:{spend}:d:#": 100,
    }
