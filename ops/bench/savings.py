"""Measured savings: one research_brief workload, all-frontier vs tiered with the cache.

The workload is a day of briefs over overlapping news: eight jobs, each a different
question over four of the five sample documents, so documents recur across jobs (as
they do in practice) while no two jobs are the same.

- all-frontier: every worker type on the top tier (`sim-large`), cache off;
- tiered + cache: the shipped tiers (extraction and classification on `sim-small`,
  analysis on `sim-large`, synthesis on `sim-long`) with the per-tenant cache on.

Both sides run on real worker processes against their own Redis, with the sim provider's
token counts and the price table; the figure is what the ledger charged.

    python -m ops.bench.savings [--jobs N]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleetline.producer.submit import Producer
from fleetline.producer.supervisor import Supervisor
from fleetline.shared.embedded_redis import start_redis
from fleetline.shared.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "ops" / "bench" / "results"
SAMPLE = json.loads((ROOT / "ops" / "samples" / "research_brief.json").read_text())
QUESTIONS = (
    "How are export rules changing chip revenue?",
    "Which companies are raising money for new plants, and how much?",
    "What are cloud providers spending on data centres?",
    "How is public aid shaping where chips are made?",
    "What are the risks to semiconductor investment next year?",
    "Who gains and who loses from the new export regulation?",
    "How large is the chip bond market this year?",
    "What do executives say about AI chip demand?",
)

FRONTIER = {
    **{f"FLEETLINE_WORKERS__{t}__TIER": "reasoning" for t in ("EXTRACTION", "CLASSIFICATION")},
    "FLEETLINE_WORKERS__SYNTHESIS__TIER": "reasoning",
    "FLEETLINE_CACHE_ENABLED": "false",
}
TIERED: dict[str, str] = {"FLEETLINE_CACHE_ENABLED": "true"}


def workload(jobs: int) -> list[dict[str, Any]]:
    docs = SAMPLE["input"]["documents"]
    specs = []
    for n in range(jobs):
        chosen = [docs[(n + k) % len(docs)] for k in range(4)]
        specs.append(
            {
                "kind": "research_brief",
                "tenant": "newsroom",
                "budget_usd": 1.0,
                "deadline_s": 60,
                "input": {"question": QUESTIONS[n % len(QUESTIONS)], "documents": chosen},
            }
        )
    return specs


def run_side(name: str, overrides: dict[str, str], specs: list[dict[str, Any]]) -> dict[str, Any]:
    """Run the workload on a fresh Redis and fleet; return cost, calls and statuses."""
    with tempfile.TemporaryDirectory() as workdir:
        server = start_redis(workdir)
        env = {**os.environ, **overrides, "FLEETLINE_REDIS_URL": server.url}
        env.pop("FLEETLINE_SIM_LATENCY_MS", None)
        saved = dict(os.environ)
        os.environ.update(env)
        fleet = Supervisor()
        try:
            settings = load_settings()
            fleet.start(settings, env, with_beat=True, log_dir=workdir)
            producer = Producer.from_settings(settings)
            time.sleep(5)  # workers connect
            jobs = []
            for spec in specs:  # one after another, as a day's briefs arrive
                receipt = producer.submit(spec)
                while not (job := producer.store.get(receipt.job_id)).status.terminal:
                    time.sleep(0.05)
                jobs.append(job)
            outcomes = [o for j in jobs for o in j.subtasks]
            return {
                "side": name,
                "cost_usd": round(sum(j.cost_usd for j in jobs), 6),
                "provider_calls": sum(1 for o in outcomes if not o.cached and o.tokens_in),
                "cached": sum(1 for o in outcomes if o.cached),
                "statuses": sorted({j.status.value for j in jobs}),
                "models": sorted({o.model for o in outcomes if o.model}),
            }
        finally:
            fleet.stop()
            server.stop()
            os.environ.clear()
            os.environ.update(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    args = parser.parse_args()
    specs = workload(args.jobs)
    frontier = run_side("all-frontier", FRONTIER, specs)
    tiered = run_side("tiered+cache", TIERED, specs)
    saved = 1 - tiered["cost_usd"] / frontier["cost_usd"]
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "jobs": args.jobs,
        "all_frontier": frontier,
        "tiered_cache": tiered,
        "ratio": round(tiered["cost_usd"] / frontier["cost_usd"], 4),
        "saved": round(saved, 4),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "savings.json").write_text(json.dumps(report, indent=2) + "\n")
    table = (
        f"# Measured savings ({report['date']}, {args.jobs} research briefs)\n\n"
        "| side | cost (USD) | provider calls | cached answers | models |\n|---|---|---|---|---|\n"
        + "".join(
            f"| {s['side']} | {s['cost_usd']:.6f} | {s['provider_calls']} | {s['cached']} | "
            f"{', '.join(s['models'])} |\n"
            for s in (frontier, tiered)
        )
        + f"\nTiered with the cache costs {report['ratio']:.2f}x all-frontier: "
        f"{saved:.0%} saved.\n"
    )
    (RESULTS / "savings.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
