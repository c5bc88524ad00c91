"""The crash guard counts deliveries that died, not round trips run again."""

from __future__ import annotations

import time

import pytest
import redis

from fleetline.shared import keys
from fleetline.shared.schemas import SubtaskPayload, SubtaskSpec
from fleetline.shared.settings import load_settings
from fleetline.workers.guards import CrashGuard
from fleetline.workers.run import Attempt, SubtaskRun
from fleetline.workers.runtime import build_runtime

pytestmark = pytest.mark.integration


def _run(redis_url: str) -> SubtaskRun:
    settings = load_settings()
    spec = SubtaskSpec(id="extract-a", worker_type="extraction", tier="cheap", text="Acme.")
    payload = SubtaskPayload(job_id="j1", tenant="t1", deadline_at=time.time() + 30, subtask=spec)
    return SubtaskRun(
        payload=payload,
        worker=settings.fleet.agents["extraction"],
        runtime=build_runtime(settings),
        attempt=Attempt(number=1, started_at=time.time()),
        guards=[CrashGuard()],
    )


def test_checks_run_again_after_a_redis_timeout_mark_a_delivery_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    run = _run(redis_url)
    for _ in range(3):  # as through_outage re-runs the guards' round trip
        assert run.before() is None
    key = keys.inflight("j1", "extract-a")
    assert redis_client.scard(key) == 1, "one delivery, one mark"
    # That delivery never finished (as if it died): a second one finds one crash and
    # runs; a third finds two and the step is poison (POISON_AFTER_CRASHES=2).
    assert _run(redis_url).before() is None
    third = _run(redis_url).before()
    assert third is not None and third.error is not None and third.error.category == "poison"
