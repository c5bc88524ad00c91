"""How long `fleetline spend reconcile` takes on a large invoice, without workers.

A synthetic ledger and invoice of the chaos backlog's size (5,000 jobs, 8 calls each:
40,000 settled call records, one invoice line per call) on a private redis-server. The
records are written by the ledger's own scripts (reserve, then settle), so they have the
fields and counters a worker leaves; each job also has a job record, as a real keyspace
has more than the ledger's keys for SCAN to walk past. Then the command's own path is
timed: reading the invoice, loading the records, reconciling.

    python -m ops.bench.reconcile_speed [--jobs 5000] [--calls-per-job 8]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from fleetline.producer.cli_spend import ledger_records, read_invoice
from fleetline.shared import keys
from fleetline.shared.embedded_redis import start_redis
from fleetline.shared.ledger import Ledger, SpendSettings, scopes_for
from fleetline.shared.models.prices import call_cost_usd
from fleetline.shared.reconcile import reconcile
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.settings import ModelSpec

MODEL = "sim-small"
MODELS = {MODEL: ModelSpec(provider="sim", input_usd_per_mtok=0.15, output_usd_per_mtok=0.60)}
# Calls written a round trip while filling the ledger (setup, not what is measured).
_FILL_BATCH = 500


def fill(client: redis.Redis, invoice: Path, jobs: int, calls_per_job: int) -> int:
    """Settle jobs x calls_per_job calls in the ledger and bill each on the invoice."""
    ledger = Ledger(client)
    limits = SpendSettings()
    calls = [
        (f"bench{j:05d}", f"bench{j:05d}:s{k}:1:{MODEL}", 900 + 7 * k, 100 + j % 50)
        for j in range(jobs)
        for k in range(calls_per_job)
    ]
    with invoice.open("w", encoding="utf-8") as out:
        for start in range(0, len(calls), _FILL_BATCH):
            trip = RoundTrip(client)
            for job, call_id, tokens_in, tokens_out in calls[start : start + _FILL_BATCH]:
                usd = call_cost_usd(MODELS[MODEL], tokens_in, tokens_out)
                scopes = scopes_for(limits, job_id=job, tenant="acme", worker_type="extraction")
                ledger.queue_reserve(trip, call_id, usd * 2, 4000, scopes, model=MODEL)
                ledger.queue_settle(trip, call_id, usd, tokens_in + tokens_out)
                trip.hset(keys.job(job), mapping={"status": "succeeded", "tenant": "acme"})
                out.write(json.dumps(_line(job, call_id, tokens_in, tokens_out)) + "\n")
            trip.execute()
    return len(calls)


def _line(job: str, call_id: str, tokens_in: int, tokens_out: int) -> dict[str, Any]:
    # The shape shared/models/sim.py's invoice_line writes for a single call.
    return {
        "model": MODEL,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "call_id": call_id,
        "job_id": job,
        "tenant": "acme",
        "worker_type": "extraction",
        "attempt": 1,
        "correction": False,
        "batch": 0,
    }


def measure(client: redis.Redis, invoice: Path) -> dict[str, Any]:
    """The command's path, timed in its two parts."""
    began = time.perf_counter()
    lines = read_invoice(invoice)
    parsed = time.perf_counter()
    result = reconcile(lines, MODELS, ledger_records(Ledger(client)))
    done = time.perf_counter()
    return {
        "invoice_lines": len(lines),
        "parse_s": round(parsed - began, 2),
        "load_and_reconcile_s": round(done - parsed, 2),
        "total_s": round(done - began, 2),
        "charged_calls": result.charged_calls,
        "billed_usd": result.billed_usd,
        "charged_usd": result.charged_usd,
        "differences": len(result.differences),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.reconcile_speed")
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--calls-per-job", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleetline-reconcile-") as tmp:
        server = start_redis(Path(tmp) / "redis")
        try:
            client = redis.Redis(port=server.port)
            calls = fill(client, Path(tmp) / "invoice.jsonl", args.jobs, args.calls_per_job)
            figures = {"jobs": args.jobs, "calls": calls, "keys": client.dbsize()}
            figures |= measure(client, Path(tmp) / "invoice.jsonl")
            print(json.dumps(figures, indent=2))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
