"""`python -m ops.bench.profile [--jobs N]`: where a no-op job's CPU goes, Fleetline vs bare.

Runs the throughput burst on each side while py-spy samples every worker process (GIL
holders only, so a sample is Python CPU), and profiles the producer's submit() in-process
with cProfile on an idle fleet. Prints milliseconds of CPU per job by function, largest
first, for Fleetline's own code and for the Celery/kombu/redis-py layers under it.
Needs py-spy (`pip install py-spy`).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from ops.bench.context import NoopStack
from ops.bench.harness import Bench
from ops.bench.jobs import run_burst
from ops.bench.plan import QUICK

RATE_HZ = 250
_LINE = re.compile(r":\d+\)")
# Fleetline's own frames: its modules load from the editable tree as fleetline/... (the
# source folders are listed too, for a non-editable checkout run from the repository).
OWN = ("fleetline/", "workers/", "shared/", "producer/", "beat/")


def _spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy") or str(Path(__file__).parents[2] / ".venv/bin/py-spy")
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--gil",
            "--nonblocking",
            "--format",
            "raw",
            "--rate",
            str(RATE_HZ),
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _load(paths: list[Path]) -> tuple[collections.Counter[str], collections.Counter[str], int]:
    """Inclusive and self sample counts by function, over collapsed-stack files."""
    incl: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            count = int(n)
            total += count
            frames = [_LINE.sub(")", f) for f in stack.split(";")]
            for frame in set(frames):
                incl[frame] += count
            own[frames[-1]] += count
    return incl, own, total


def profile_workers(stack: NoopStack, jobs: int, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for side in (stack.fleetline, stack.bare):
        run_burst(side, stack.shape, 20)
        files = [workdir / f"{side.name}-{i}.txt" for i in range(len(side.procs))]
        spies = [_spy(p.pid, f) for p, f in zip(side.procs, files, strict=True)]
        time.sleep(1.0)
        run_burst(side, stack.shape, jobs)
        for spy in spies:
            spy.send_signal(2)
        for spy in spies:
            spy.wait(30)
        incl, own, total = _load(files)
        per_job = 1000 / RATE_HZ / jobs
        out[side.name] = {
            "ms_per_job": round(total * per_job, 2),
            "inclusive": [(f, round(n * per_job, 3)) for f, n in incl.most_common(400)],
            "self": [(f, round(n * per_job, 3)) for f, n in own.most_common(30)],
        }
    return out


def profile_submit(stack: NoopStack, jobs: int) -> dict[str, Any]:
    """The producer's CPU per submit, with the workers paused (nothing competes)."""
    out: dict[str, Any] = {}
    for side in (stack.fleetline, stack.bare):
        prof = cProfile.Profile()
        side.begin()
        t = time.process_time()
        prof.enable()
        for _ in range(jobs):
            side.submit(stack.shape)
        prof.disable()
        cpu = time.process_time() - t
        stats = pstats.Stats(prof)
        rows = sorted(
            (
                (f"{Path(k[0]).name}:{k[2]}", v[3] / jobs * 1000)
                for k, v in stats.stats.items()  # type: ignore[attr-defined]
            ),
            key=lambda kv: -kv[1],
        )
        out[side.name] = {"cpu_ms_per_job": round(cpu / jobs * 1000, 2), "cumulative": rows[:40]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.profile")
    parser.add_argument("--jobs", type=int, default=300)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fleetline-profile-"))
    bench = Bench.start(True, workdir)
    stack = NoopStack.start(bench, QUICK)
    try:
        workers = profile_workers(stack, args.jobs, workdir)
        for side in stack.sides():
            for p in side.procs:
                p.send_signal(19)  # SIGSTOP: the submit profile runs alone
        try:
            submit = profile_submit(stack, min(args.jobs, 200))
        finally:
            for side in stack.sides():
                for p in side.procs:
                    p.send_signal(18)  # SIGCONT
    finally:
        stack.stop()
        bench.stop()
    for name, data in workers.items():
        print(f"\n=== workers, {name}: {data['ms_per_job']} ms of Python CPU per job")
        for frame, ms in data["inclusive"]:
            if ms >= 0.05 and any(k in frame for k in (*OWN, "celery/", "kombu/", "redis/")):
                print(f"  {ms:7.3f} ms  {frame}")
    for name, data in submit.items():
        print(f"\n=== producer submit(), {name}: {data['cpu_ms_per_job']} ms CPU per job")
        for frame, ms in data["cumulative"]:
            print(f"  {ms:7.3f} ms  {frame}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
