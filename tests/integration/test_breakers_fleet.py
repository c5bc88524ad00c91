"""Fleet-wide circuit breakers with real worker processes and the sim provider's outages."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetline.producer.cli import app
from fleetline.shared.breakers import BreakerState, RedisBreakers
from fleetline.shared.schemas import JobResult, OutcomeStatus
from tests.integration.conftest import FleetFactory, RunningFleet

pytestmark = pytest.mark.integration

BREAKER = "analysis:sim-large"


def brief(n: int) -> dict[str, object]:
    docs = [{"id": f"d{i}", "text": f"Acme Corp grew {n * 10 + i}% in 2025."} for i in range(2)]
    return {
        "kind": "research_brief",
        "deadline_s": 30,
        "input": {"question": f"How did Acme grow in case {n}?", "documents": docs},
    }


def wave(fleet: RunningFleet, first: int, count: int) -> list[JobResult]:
    receipts = [fleet.producer.submit(brief(n)) for n in range(first, first + count)]
    return [fleet.wait(r.job_id) for r in receipts]


def analysis_calls(log: Path, since: float, model: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return [
        c
        for c in lines
        if c["worker_type"] == "analysis" and c["model"] == model and float(c["t"]) >= since
    ]


def test_breaker_opens_fleet_wide_falls_back_and_probes_once(
    start_fleet: FleetFactory, tmp_path: Path
) -> None:
    log, outage = tmp_path / "calls.jsonl", tmp_path / "outage"
    outage.write_text("sim-large\n")
    fleet = start_fleet(
        FLEETLINE_SIM_CALL_LOG=str(log),
        FLEETLINE_SIM_OUTAGE_FILE=str(outage),
        FLEETLINE_SIM_LATENCY_MS="100",
        FLEETLINE_WORKERS__ANALYSIS__POOL="prefork",
        FLEETLINE_WORKERS__ANALYSIS__CONCURRENCY="4",
        FLEETLINE_WORKERS__ANALYSIS__MAX_RETRIES="0",
        FLEETLINE_BREAKER_MIN_CALLS="4",
        FLEETLINE_BREAKER_RESET_TIMEOUT_S="3",
        FLEETLINE_CACHE_ENABLED="false",
    )
    store = RedisBreakers(fleet.producer.store.client, fleet.settings.breaker)

    # Four processes call the failing model together; their failures open one breaker.
    failing = wave(fleet, 0, 4)
    assert {o.status for j in failing for o in j.subtasks if o.worker_type == "analysis"} == {
        OutcomeStatus.FAILED
    }
    assert len({c["pid"] for c in analysis_calls(log, 0, "sim-large")}) > 1
    snapshot = store.snapshot(BREAKER)
    assert snapshot.state is BreakerState.OPEN and snapshot.failures >= 4

    # While it is open no process calls that model: the cheaper tier's model serves.
    opened = time.time()
    served = wave(fleet, 10, 8)
    analysis = [o for j in served for o in j.subtasks if o.worker_type == "analysis"]
    assert all(o.status is OutcomeStatus.OK for o in analysis)
    assert {(o.model, o.routed_from, o.route_reason) for o in analysis} == {
        ("sim-small", "sim-large", "circuit_open")
    }
    assert analysis_calls(log, opened, "sim-large") == []
    assert len({c["pid"] for c in analysis_calls(log, opened, "sim-small")}) > 1

    # Half-open: of eight concurrent subtasks in four processes exactly one probes the
    # provider, which is still down, so the breaker opens again.
    time.sleep(fleet.settings.breaker.reset_timeout_s + 0.5)
    half_open = time.time()
    wave(fleet, 20, 8)
    assert len(analysis_calls(log, half_open, "sim-large")) == 1
    assert store.snapshot(BREAKER).state is BreakerState.OPEN

    # The provider recovers: the next probe succeeds and closes the breaker.
    outage.unlink()
    time.sleep(fleet.settings.breaker.reset_timeout_s + 0.5)
    recovered = wave(fleet, 30, 1)[0]
    probe = next(o for o in recovered.subtasks if o.worker_type == "analysis")
    assert (probe.model, probe.status) == ("sim-large", OutcomeStatus.OK)
    assert store.snapshot(BREAKER).state is BreakerState.CLOSED
    after = wave(fleet, 40, 2)
    assert {o.model for j in after for o in j.subtasks if o.worker_type == "analysis"} == {
        "sim-large"
    }


def test_nothing_left_in_the_chain_ends_circuit_open_without_a_call(
    start_fleet: FleetFactory, tmp_path: Path
) -> None:
    log, outage = tmp_path / "calls.jsonl", tmp_path / "outage"
    outage.write_text("sim-small\n")
    fleet = start_fleet(
        FLEETLINE_SIM_CALL_LOG=str(log),
        FLEETLINE_SIM_OUTAGE_FILE=str(outage),
        FLEETLINE_WORKERS__CLASSIFICATION__MAX_RETRIES="0",
        FLEETLINE_BREAKER_MIN_CALLS="2",
        FLEETLINE_BREAKER_RESET_TIMEOUT_S="60",
        FLEETLINE_CACHE_ENABLED="false",
    )
    wave(fleet, 0, 2)  # classification has one model (sim-small): it fails and opens
    opened = time.time()
    job = wave(fleet, 10, 1)[0]
    classified = [o for o in job.subtasks if o.worker_type == "classification"]
    assert {o.status for o in classified} == {OutcomeStatus.CIRCUIT_OPEN}
    assert all(o.latency_ms < 100 and o.cost_usd == 0 for o in classified)
    made = [json.loads(line) for line in log.read_text().splitlines()]
    assert not [c for c in made if c["worker_type"] == "classification" and c["t"] >= opened]

    # The operator's view, and closing the breaker by hand.
    listed = CliRunner().invoke(app, ["breakers", "--json"])
    assert listed.exit_code == 0, listed.output
    states = {b["name"]: b["state"] for b in json.loads(listed.stdout)}
    assert states["classification:sim-small"] == "open"
    reset = CliRunner().invoke(app, ["breakers", "reset", "classification:sim-small"])
    assert reset.exit_code == 0 and "open -> closed" in reset.stdout
    listed = CliRunner().invoke(app, ["breakers", "--json"])
    states = {b["name"]: b["state"] for b in json.loads(listed.stdout)}
    assert states["classification:sim-small"] == "closed"
