"""The sim's invoice against the ledger, with real workers: `fleetline spend reconcile`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from fleetline.producer.cli import app as cli
from fleetline.shared.schemas import JobResult, JobStatus
from fleetline.shared.settings import get_settings
from tests.integration.conftest import FleetFactory
from tests.integration.test_cost_control import brief

pytestmark = pytest.mark.integration

runner = CliRunner()
# Wide windows so a batch job's classifications, fetched one by one, make one batch.
BATCHING = {
    "FLEETLINE_WORKERS__CLASSIFICATION__BATCH_IDLE_MS": "300",
    "FLEETLINE_WORKERS__CLASSIFICATION__BATCH_MAX_WAIT_MS": "2000",
}


def reconcile(invoice: Path, *extra: str) -> tuple[int, dict[str, Any], str]:
    get_settings.cache_clear()
    result = runner.invoke(cli, ["spend", "reconcile", "--invoice", str(invoice), "--json", *extra])
    data = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.exit_code, data, result.stderr


def lines(invoice: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in invoice.read_text().splitlines()]


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def assert_agrees(invoice: Path, jobs: list[JobResult]) -> dict[str, Any]:
    code, data, err = reconcile(invoice)
    assert (code, data.get("differences")) == (0, []), (err, data)
    total = sum(j.cost_usd for j in jobs)
    assert total > 0
    assert data["billed_usd"] == pytest.approx(total, abs=1e-9)
    assert data["charged_usd"] == pytest.approx(total, abs=1e-9)
    assert data["billed_calls"] == len(lines(invoice))
    assert set(data["by_job"]) == {j.job_id for j in jobs}
    for j in jobs:
        assert data["by_job"][j.job_id]["charged_usd"] == pytest.approx(j.cost_usd, abs=1e-9)
        assert data["by_job"][j.job_id]["billed_usd"] == pytest.approx(j.cost_usd, abs=1e-9)
    assert data["by_tenant"]["t1"]["billed_usd"] == pytest.approx(total, abs=1e-9)
    return data


def test_the_ledger_charges_exactly_what_the_sim_billed(
    start_fleet: FleetFactory, tmp_path: Path, redis_client: redis.Redis
) -> None:
    invoice = tmp_path / "invoice.jsonl"
    fleet = start_fleet(
        FLEETLINE_SIM_INVOICE=str(invoice), FLEETLINE_SIM_LATENCY_MS="100", **BATCHING
    )
    receipts = [fleet.producer.submit(brief(3, tag=f"job{i}")) for i in range(2)]
    receipts.append(fleet.producer.submit(brief(8, tag="batched", latency_profile="batch")))
    jobs = [fleet.wait(r.job_id) for r in receipts]
    assert all(j.status is JobStatus.SUCCEEDED for j in jobs), [j.status for j in jobs]

    billed = lines(invoice)
    batches = [x for x in billed if x["batch"]]
    assert batches and all(len(x["call_id"]) == x["batch"] for x in batches), billed
    assert {j for x in batches for j in x["job_id"]} == {receipts[2].job_id}
    data = assert_agrees(invoice, jobs)
    assert data["charged_calls"] == sum(x["batch"] or 1 for x in billed)

    # A line the ledger never charged, and a token count changed on another.
    extra = {**billed[0], "call_id": f"{billed[0]['job_id']}:ghost:1:sim-small", "batch": 0}
    if isinstance(billed[0]["call_id"], list):  # pragma: no cover  (a batch came first)
        extra["job_id"] = billed[0]["job_id"][0]
    changed = [dict(x) for x in billed]
    single = next(i for i, x in enumerate(changed) if not x["batch"])
    changed[single]["tokens_out"] += 7
    tampered = write(tmp_path / "tampered.jsonl", [*changed, extra])
    code, data, _ = reconcile(tampered)
    assert code == 1
    kinds = {(d["kind"], json.dumps(d["call_id"])) for d in data["differences"]}
    assert kinds == {
        ("uncharged", json.dumps(extra["call_id"])),
        ("amount", json.dumps(changed[single]["call_id"])),
    }
    amount = next(d for d in data["differences"] if d["kind"] == "amount")
    assert amount["billed_usd"] - amount["charged_usd"] == pytest.approx(
        7 * fleet.settings.models[changed[single]["model"]].output_usd_per_mtok * 1e-6
    )

    # A line left out: its settled record is charged but not billed.
    dropped = write(tmp_path / "dropped.jsonl", [x for i, x in enumerate(billed) if i != single])
    code, data, _ = reconcile(dropped)
    assert code == 1
    assert [(d["kind"], d["call_id"]) for d in data["differences"]] == [
        ("unbilled", billed[single]["call_id"])
    ]

    # A batch line whose items' charges no longer add up to it.
    batch = next(i for i, x in enumerate(billed) if x["batch"])
    bumped = [dict(x) for x in billed]
    bumped[batch]["tokens_in"] += 1000
    code, data, _ = reconcile(write(tmp_path / "bumped.jsonl", bumped))
    assert code == 1
    assert [(d["kind"], d["call_id"]) for d in data["differences"]] == [
        ("amount", billed[batch]["call_id"])
    ]

    # The table output says the same.
    get_settings.cache_clear()
    result = runner.invoke(cli, ["spend", "reconcile", "--invoice", str(invoice)])
    assert result.exit_code == 0 and "agree" in result.stdout
    # `spend` itself still reports the window.
    get_settings.cache_clear()
    result = runner.invoke(cli, ["spend", "--json", "--by", "job"])
    assert result.exit_code == 0
    assert set(json.loads(result.stdout)["groups"]) == {j.job_id for j in jobs}


def test_corrections_are_billed_and_charged_each_under_its_own_call_id(
    start_fleet: FleetFactory, tmp_path: Path, redis_client: redis.Redis
) -> None:
    invoice = tmp_path / "invoice.jsonl"
    fleet = start_fleet(FLEETLINE_SIM_INVOICE=str(invoice), FLEETLINE_SIM_MALFORMED_RATE="1")
    receipts = [fleet.producer.submit(brief(2, tag=f"fix{i}")) for i in range(2)]
    jobs = [fleet.wait(r.job_id) for r in receipts]
    assert all(j.status is JobStatus.SUCCEEDED for j in jobs), [j.status for j in jobs]

    billed = lines(invoice)
    corrections = [x for x in billed if x["correction"]]
    assert corrections and all(":c" in x["call_id"] for x in corrections)
    assert len(corrections) == len(billed) - len(corrections), "each malformed answer, fixed once"
    assert_agrees(invoice, jobs)


def test_an_unreadable_or_invalid_invoice_exits_2_naming_the_line(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    code, _, err = reconcile(tmp_path / "missing.jsonl")
    assert code == 2 and "cannot read the invoice" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(
            {"model": "sim-small", "tokens_in": 1, "tokens_out": 1, "call_id": "j:1", "job_id": "j"}
        )
        + "\n{not json\n"
    )
    code, _, err = reconcile(bad)
    assert code == 2 and "line 2" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    code, data, _ = reconcile(empty)
    assert code == 0 and data["billed_calls"] == 0 and data["differences"] == []


def test_a_malformed_batch_and_its_single_calls_are_each_charged_as_billed(
    start_fleet: FleetFactory, tmp_path: Path, redis_client: redis.Redis
) -> None:
    invoice = tmp_path / "invoice.jsonl"
    fleet = start_fleet(
        FLEETLINE_SIM_INVOICE=str(invoice),
        FLEETLINE_SIM_LATENCY_MS="50",
        FLEETLINE_SIM_MALFORMED_RATE="1",
        FLEETLINE_WORKERS__CLASSIFICATION__CORRECTION_ATTEMPTS="1",
        **BATCHING,
    )
    receipt = fleet.producer.submit(brief(4, tag="mb", latency_profile="batch"))
    job = fleet.wait(receipt.job_id)
    assert job.status is JobStatus.SUCCEEDED

    billed = lines(invoice)
    # The batch's answer did not parse: each item then called alone (`:s`), and re-asked.
    assert any(x["batch"] and x["worker_type"] == "classification" for x in billed)
    singles = [x["call_id"] for x in billed if x["worker_type"] == "classification"]
    assert sum(isinstance(c, str) and c.endswith(":s") for c in singles) == 4
    assert sum(isinstance(c, str) and c.endswith(":s:c1") for c in singles) == 4
    assert_agrees(invoice, [job])
