"""How big each scenario is, in full and in `--quick` mode (same file shape, smaller runs)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Sizes:
    """Every knob of a run; written into the results so a figure can be read in context."""

    mode: str
    reps: int
    # Repetitions re-run per scenario when other processes took the CPU (see harness).
    noisy_retries: int
    # Throughput / peer: a burst of jobs of `docs` documents each.
    throughput_jobs: int
    docs: int
    noop_concurrency: int
    # Latency: jobs one at a time, per repetition.
    latency_jobs: int
    # Redis cost: jobs per repetition (MONITOR is on, so this run is never timed), and
    # the idle time measured before each to subtract background traffic.
    cost_jobs: int
    cost_idle_s: float
    # Fan-out: subtasks of the small and the large job; repetitions of the large one.
    fanout_small: int
    fanout_large: int
    fanout_large_reps: int
    # Memory: jobs of the RSS run and their documents (small jobs: many jobs in little
    # time), jobs kept unfinished at once, jobs of the bytes-per-job run (standard shape),
    # the baseline's RSS run, and whether to wait out the TTLs.
    memory_jobs: int
    memory_docs: int
    memory_window: int
    memory_bytes_jobs: int
    memory_baseline_jobs: int
    memory_wait_ttl: bool
    ttl_s: int
    # I/O-bound: subtasks on Fleetline's one threads worker, and on bare prefork -c 2.
    io_subtasks: int
    io_prefork_subtasks: int
    io_concurrency: int
    io_reps: int
    io_latency_ms: float
    io_docs: int
    # Guards: the pre-enqueued burst each guard configuration runs, and its repetitions.
    guards_jobs: int = 300
    guards_reps: int = 5

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL = Sizes(
    mode="full",
    reps=5,
    noisy_retries=2,
    throughput_jobs=1000,
    docs=3,
    noop_concurrency=8,
    latency_jobs=200,
    cost_jobs=50,
    cost_idle_s=1.0,
    fanout_small=1000,
    fanout_large=10_000,
    fanout_large_reps=5,
    memory_jobs=10_000,
    memory_docs=1,
    memory_window=200,
    memory_bytes_jobs=500,
    memory_baseline_jobs=1000,
    memory_wait_ttl=True,
    ttl_s=60,
    io_subtasks=2000,
    io_prefork_subtasks=30,
    io_concurrency=200,
    io_reps=5,
    io_latency_ms=500.0,
    io_docs=4,
    guards_jobs=300,
    guards_reps=5,
)

QUICK = Sizes(
    mode="quick",
    reps=3,
    noisy_retries=0,
    throughput_jobs=60,
    docs=3,
    noop_concurrency=8,
    latency_jobs=20,
    cost_jobs=15,
    cost_idle_s=0.3,
    fanout_small=200,
    fanout_large=2000,
    fanout_large_reps=1,
    memory_jobs=1000,
    memory_docs=1,
    memory_window=200,
    memory_bytes_jobs=60,
    memory_baseline_jobs=200,
    memory_wait_ttl=False,
    ttl_s=60,
    io_subtasks=400,
    io_prefork_subtasks=10,
    io_concurrency=200,
    io_reps=2,
    io_latency_ms=500.0,
    io_docs=4,
    guards_jobs=30,
    guards_reps=3,
)
