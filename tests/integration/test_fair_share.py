"""Fair share between tenants with real workers: one tenant's flood of jobs does not
starve another tenant's job, and the flood still completes."""

from __future__ import annotations

import time

import pytest

from fleetline.shared.schemas import JobResult, JobStatus
from tests.integration.conftest import FleetFactory, RunningFleet
from tests.integration.test_cost_control import brief

pytestmark = pytest.mark.integration

SLOW = {
    "FLEETLINE_SIM_LATENCY_MS": "400",
    "FLEETLINE_CACHE_ENABLED": "false",
    **{f"FLEETLINE_WORKERS__{n}__CONCURRENCY": "4" for n in ("EXTRACTION", "CLASSIFICATION")},
}
FLOOD = 10


def _latency(job: JobResult) -> float:
    return (job.finished_at or 0) - job.created_at


def _flood_then_one(fleet: RunningFleet) -> tuple[float, list[JobResult]]:
    flood = [
        fleet.producer.submit(brief(3, tag=f"f{n}", tenant="flood", deadline_s=90)).job_id
        for n in range(FLOOD)
    ]
    time.sleep(0.3)  # the flood's steps are queued first
    other = fleet.wait(fleet.producer.submit(brief(3, tenant="quiet", deadline_s=90)).job_id)
    assert other.status is JobStatus.SUCCEEDED, fleet.logs()
    return _latency(other), [fleet.wait(j, timeout_s=120) for j in flood]


def test_one_tenants_flood_does_not_starve_another(start_fleet: FleetFactory) -> None:
    fleet = start_fleet(with_beat=False, FLEETLINE_LIMITS_TENANT_STEPS_IN_FLIGHT='{"*": 3}', **SLOW)
    alone = _latency(fleet.wait(fleet.producer.submit(brief(3, tenant="quiet")).job_id))
    shared, flood = _flood_then_one(fleet)

    assert all(j.status is JobStatus.SUCCEEDED for j in flood), [j.status for j in flood]
    assert shared < alone * 1.5 + 1.0, f"alone {alone:.2f}s, beside the flood {shared:.2f}s"


def test_without_a_share_the_flood_starves_the_other_tenant(start_fleet: FleetFactory) -> None:
    fleet = start_fleet(with_beat=False, **SLOW)
    alone = _latency(fleet.wait(fleet.producer.submit(brief(3, tenant="quiet")).job_id))
    shared, _ = _flood_then_one(fleet)
    assert shared > alone * 1.5 + 1.0, f"alone {alone:.2f}s, beside the flood {shared:.2f}s"
