"""`python -m ops.bench [--quick] [--only SCENARIO[,SCENARIO]]`: run and write the results.

A full run of every scenario writes `ops/bench/results/latest.{json,md}`; a quick run or
`--only` writes `partial.{json,md}` beside them, so neither ever replaces the full one. A
quick run leaves out the per-guard scenario unless `--only` names it.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.bench import (
    scenarios_cost,
    scenarios_guards,
    scenarios_io,
    scenarios_memory,
    scenarios_speed,
)
from ops.bench.context import Context
from ops.bench.harness import Bench
from ops.bench.plan import FULL, QUICK
from ops.bench.report import ORDER, environment, write

log = logging.getLogger("ops.bench")

RESULTS = Path(__file__).resolve().parent / "results"

Scenario = Callable[[Context], dict[str, Any]]
# Run order: the no-op stack serves everything up to memory; io_concurrency and guards
# start their own sides.
SCENARIOS: dict[str, Scenario] = {
    "throughput": scenarios_speed.throughput,
    "peer_dramatiq": scenarios_speed.peer_dramatiq,
    "latency": scenarios_speed.latency,
    "redis_cost": scenarios_cost.redis_cost,
    "fanout": scenarios_speed.fanout,
    "memory": scenarios_memory.memory,
    "io_concurrency": scenarios_io.io_concurrency,
    "guards": scenarios_guards.guards,
}
assert set(SCENARIOS) == set(ORDER)
# Left out of a quick run unless named: a dozen fleets to start (see scenarios_guards).
NOT_QUICK = ("guards",)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ops.bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="smaller runs (under 5 minutes), without guards"
    )
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated scenarios to run (of: {', '.join(ORDER)})",
    )
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and Redis dir")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="let the producer, Redis and the workers share every CPU (default: the "
        "producer on the first CPU, the rest on the others)",
    )
    args = parser.parse_args(argv)
    named = [s.strip() for s in args.only.split(",") if s.strip()]
    default = [s for s in SCENARIOS if not (args.quick and s in NOT_QUICK)]
    args.selected = named or default
    unknown = set(args.selected) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit runs the `finally` blocks: every worker and the Redis server are stopped.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("celery", "kombu", "dramatiq", "pika"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sizes = QUICK if args.quick else FULL
    # Only a full run of every scenario is `latest`.
    partial = args.only != "" or args.quick
    out_dir = args.out or RESULTS
    workdir = Path(tempfile.mkdtemp(prefix="fleetline-bench-"))
    started = time.monotonic()
    bench = Bench.start(args.quick, workdir, pin=not args.no_pin)
    ctx = Context(bench, sizes, shared={"selected": args.selected})
    results: dict[str, Any] = {
        "sizes": sizes.as_dict(),
        "environment": environment(str(bench.client().info("server")["redis_version"])),
        "partial": partial,
        "scenarios": {},
    }
    try:
        for name, run in SCENARIOS.items():
            if name not in args.selected:
                continue
            if name in ("io_concurrency", "guards"):
                ctx.close()  # the no-op workers would only steal CPU from these
            log.info("== %s", name)
            t0 = time.monotonic()
            try:
                outcome = run(ctx)
            except Exception as exc:
                log.error("scenario %s failed:\n%s", name, traceback.format_exc())
                outcome = {"error": repr(exc)[:500], "target_met": False, "notes": []}
            outcome["duration_s"] = round(time.monotonic() - t0, 1)
            results["scenarios"][name] = outcome
            log.info(
                "== %s done in %.0f s: target met %s",
                name,
                outcome["duration_s"],
                outcome.get("target_met"),
            )
            _save(results, out_dir, partial, started)
    finally:
        ctx.close()
        bench.stop()
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log.info("logs kept in %s", workdir)
    json_path, md_path = _save(results, out_dir, partial, started)
    log.info("wrote %s and %s in %.0f s", json_path, md_path, time.monotonic() - started)
    print(md_path.read_text())
    return 0


def _save(
    results: dict[str, Any], out_dir: Path, partial: bool, started: float
) -> tuple[Path, Path]:
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["targets"] = {k: v.get("target_met") for k, v in results["scenarios"].items()}
    results["environment"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return write(results, out_dir, "partial" if partial else "latest")


if __name__ == "__main__":
    raise SystemExit(main())
