"""`make chaos` (`python -m ops.chaos [--quick] [--scenarios a,b]`): faults against a live
fleet, then every job and every cent counted. Exits 1 when any scenario fails.

Results: ops/chaos/results/latest.json (a quick run says `"quick": true`), one object per
scenario with jobs, terminal, lost, double_recorded, billed_usd, charged_usd,
uncharged_calls, recovery_s and passed, plus the machine and the date.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from ops.chaos import scenarios_input, scenarios_kill, scenarios_net
from ops.chaos.checks import Account
from ops.chaos.harness import ChaosRedis
from ops.chaos.run import Run

log = logging.getLogger("ops.chaos")

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS: dict[str, Callable[[Run], Account]] = {
    "kill_children": scenarios_kill.kill_children,
    "kill_workers": scenarios_kill.kill_workers,
    "redis_restart": scenarios_kill.redis_restart,
    "partition": scenarios_net.partition,
    "poison": scenarios_input.poison,
    "fuzz_specs": scenarios_input.fuzz_specs,
    "backlog": scenarios_net.backlog,
    "wire": scenarios_input.wire,
    "spend_race": scenarios_kill.spend_race,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ops.chaos", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the reduced run (< 10 min)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    workdir = Path(tempfile.mkdtemp(prefix="fleetline-chaos-"))
    run = Run(args.quick, workdir, ChaosRedis.start(workdir / "redis"))
    results: dict[str, dict[str, object]] = {}
    started = time.monotonic()
    try:
        for name in args.scenarios.split(","):
            log.info("scenario %s", name)
            began = time.monotonic()
            try:
                outcome = SCENARIOS[name](run).as_dict()
            except Exception:
                log.error("scenario %s failed:\n%s", name, traceback.format_exc())
                outcome = {"passed": False, "error": traceback.format_exc(limit=5)}
            finally:
                run.end_scenario()
            outcome["seconds"] = round(time.monotonic() - began, 1)
            results[name] = outcome
            verdict = "passed" if outcome["passed"] else "FAILED"
            log.info("scenario %s: %s %s", name, verdict, json.dumps(outcome, default=str))
    finally:
        run.server.stop()
    passed = all(r["passed"] for r in results.values())
    _save(results, args.quick, time.monotonic() - started, passed)
    if passed:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log.info("logs kept in %s", workdir)
    return 0 if passed else 1


def _save(results: dict[str, dict[str, object]], quick: bool, seconds: float, ok: bool) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    document = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "quick": quick,
        "seconds": round(seconds, 1),
        "passed": ok,
        "scenarios": results,
    }
    path = RESULTS / "latest.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(_table(results))
    print(f"written to {path}")


def _table(results: dict[str, dict[str, object]]) -> str:
    columns = ("jobs", "terminal", "lost", "double_recorded", "billed_usd", "charged_usd",
               "uncharged_calls", "recovery_s", "passed")  # fmt: skip
    rows = ["| scenario | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, r in results.items():
        rows.append(f"| {name} | " + " | ".join(str(r.get(c, "")) for c in columns) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
