"""A call the provider billed is charged exactly once, whatever fails before its settlement.

Workers are SIGKILLed after their calls were billed and before the closing round trip, and
Redis is stopped for longer than the outage grace while a step is calling; each time the
sim's invoice is reconciled with the ledger, and no hold may be left or swept uncharged.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from fleetline.shared.embedded_redis import start_redis
from fleetline.shared.ledger import Ledger
from fleetline.shared.schemas import JobStatus
from tests.integration.conftest import FleetFactory
from tests.integration.test_budget_bounds import APP, TEXT
from tests.integration.test_invoice_reconcile import lines, reconcile

pytestmark = pytest.mark.integration


def _spec(text: str, deadline_s: float = 30) -> dict[str, object]:
    return {
        "kind": "facts_job",
        "input": {"text": text},
        "budget_usd": 1.0,
        "deadline_s": deadline_s,
    }


def _settled_everywhere(invoice: Path, timeout_s: float = 30) -> dict[str, Any]:
    """Reconcile until the ledger agrees with the invoice (adopted spools settle within
    seconds), then return the last reconciliation."""
    deadline = time.monotonic() + timeout_s
    while True:
        code, data, err = reconcile(invoice)
        if code == 0 or time.monotonic() > deadline:
            assert (code, data.get("differences")) == (0, []), (err, data)
            return data
        time.sleep(0.5)


def _records(client: redis.Redis, invoice: Path) -> dict[str, str]:
    """The ledger state of every call id the invoice billed."""
    billed = [line["call_id"] for line in lines(invoice)]
    found = Ledger(client).call_records(billed)
    return {call_id: found[call_id].state if call_id in found else "none" for call_id in billed}


def test_workers_killed_between_call_and_settlement_leave_every_call_charged_once(
    start_fleet: FleetFactory, redis_client: redis.Redis, tmp_path: Path
) -> None:
    invoice = tmp_path / "invoice.jsonl"
    fleet = start_fleet(
        with_beat=False,
        FLEETLINE_APP=APP,
        FLEETLINE_CACHE_ENABLED="false",
        FLEETLINE_SIM_INVOICE=str(invoice),
        FLEETLINE_SIM_CRASH_MARKER="#crash-after-billing",
        FLEETLINE_SIM_CRASH_TYPES="facts",
        FLEETLINE_SIM_CRASH_AT="settlement",
        FLEETLINE_WORKERS__FACTS__POOL="prefork",
        FLEETLINE_WORKERS__FACTS__CONCURRENCY="1",
        FLEETLINE_WORKERS__FACTS__RETRY_BACKOFF_S="0.05",
        FLEETLINE_WORKERS__FACTS__MAX_RETRIES="3",
    )
    doomed = fleet.producer.submit(_spec(TEXT + "#crash-after-billing")).job_id
    healthy = fleet.producer.submit(_spec(TEXT)).job_id
    doomed_job, healthy_job = fleet.wait(doomed), fleet.wait(healthy)

    assert healthy_job.status is JobStatus.SUCCEEDED, fleet.logs()
    step = next(o for o in doomed_job.subtasks if o.subtask_id == "facts")
    assert step.error is not None and step.error.category == "poison", fleet.logs()
    killed = [line for line in lines(invoice) if line["job_id"] == doomed]
    assert len(killed) >= 2, "each killed delivery made (and was billed for) its call"
    assert len({line["call_id"] for line in killed}) == len(killed), (
        "a redelivery never calls on the hold of the delivery it replaces"
    )

    data = _settled_everywhere(invoice)
    assert data["by_job"][doomed]["charged_usd"] == pytest.approx(
        data["by_job"][doomed]["billed_usd"], abs=1e-9
    )
    assert data["by_job"][doomed]["billed_usd"] > 0
    assert set(_records(redis_client, invoice).values()) == {"settled"}, "no hold swept uncharged"
    assert Ledger(redis_client).job_spend(doomed).reserved_usd == 0
    assert all(fleet.fleet.alive().values()), fleet.logs()


def test_redis_away_past_the_grace_after_a_call_still_charges_it_once(
    start_fleet: FleetFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = start_redis(tmp_path / "redis", persist=True)
    port = server.port
    monkeypatch.setenv("FLEETLINE_REDIS_URL", server.url)
    invoice = tmp_path / "invoice.jsonl"
    try:
        fleet = start_fleet(
            with_beat=False,
            FLEETLINE_APP=APP,
            FLEETLINE_CACHE_ENABLED="false",
            FLEETLINE_SIM_INVOICE=str(invoice),
            FLEETLINE_SIM_LATENCY_MS="1500",
            FLEETLINE_REDIS_OUTAGE_GRACE_S="1",
        )
        job_ids = [fleet.producer.submit(_spec(TEXT, deadline_s=60)).job_id for _ in range(2)]
        time.sleep(0.8)  # the facts steps are calling
        server.stop()
        deadline = time.monotonic() + 15
        while not invoice.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3.0)  # the calls answered; their steps gave up after the grace
        assert invoice.exists(), "the calls were made while Redis was away"
        server = start_redis(tmp_path / "redis", port=port, persist=True)
        client = redis.Redis.from_url(server.url)

        data = _settled_everywhere(invoice)
        jobs = [fleet.wait(job_id, timeout_s=90) for job_id in job_ids]
        assert all(j.status.terminal for j in jobs), [j.status for j in jobs]
        data = _settled_everywhere(invoice)
        assert data["billed_calls"] == len(lines(invoice)) >= 2
        assert set(_records(client, invoice).values()) == {"settled"}, "no hold swept uncharged"
        for job_id in job_ids:
            assert Ledger(client).job_spend(job_id).reserved_usd == 0
        client.close()
    finally:
        server.stop()
