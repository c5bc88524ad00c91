"""What scenarios share: the run's sizes, and one no-op stack started once for all of them.

The no-op stack is Fleetline (one worker per agent of the example fleet, plus beat), bare
Celery (one worker per queue, same queues and flags) and Dramatiq, each on a database of
its own, all with the same pool and concurrency. Runs are told apart by their own job ids
and run ids, so the databases never need flushing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ops.bench.harness import Bench, child_env, settings_for
from ops.bench.jobs import Shape, shape_of
from ops.bench.plan import Sizes
from ops.bench.sides import FleetlineSide, start_all, stop_all
from ops.bench.sides_bare import BareCelerySide, DramatiqSide, check_bare_queues


def worker_types() -> tuple[str, ...]:
    """The agents and tools of the fleet the benchmark's workers load: the example fleet
    (`child_env` drops any FLEETLINE_APP of ours)."""
    return tuple(settings_for(child_env({})).fleet.worker_types)


def fleet_env(
    sizes: Sizes, *, pool: str, concurrency: int, latency_ms: float = 0.0, **extra: str
) -> dict[str, str]:
    """FLEETLINE_ settings of a benchmark fleet: every agent and tool gets the same pool."""
    env = {
        "FLEETLINE_SIM_LATENCY_MS": f"{latency_ms:g}",
        "FLEETLINE_LIMITS_FINISHED_TTL_S": str(sizes.ttl_s),
        "FLEETLINE_CELERY_RESULT_EXPIRES_S": str(sizes.ttl_s),
    }
    for name in worker_types():
        env[f"FLEETLINE_WORKERS__{name.upper()}__POOL"] = pool
        env[f"FLEETLINE_WORKERS__{name.upper()}__CONCURRENCY"] = str(concurrency)
        env[f"FLEETLINE_WORKERS__{name.upper()}__CACHE_TTL_S"] = str(sizes.ttl_s)
    env.update(extra)
    return env


# What a production fleet records besides its work: each job's trace in Redis (the
# default) and Prometheus metrics (a multiprocess folder, as `fleetline up` and
# `fleetline worker` give their processes). The dark side records neither.
DARK_ENV = {"FLEETLINE_TRACE_STORE": "off", "FLEETLINE_METRICS_ENABLED": "false"}
# Fleetline with every guard off (FLEETLINE_WORKER_GUARDS, a diagnostic knob): what is
# left is the framework itself (state store, fan-in, synthesis, tracing, metrics).
UNGUARDED_ENV = {"FLEETLINE_WORKER_GUARDS": "none"}


@dataclass
class NoopStack:
    """The sides of the no-op scenarios, started together: Fleetline as run in production,
    Fleetline with every guard off (`unguarded`), Fleetline with tracing and metrics off
    (`dark`), bare Celery and Dramatiq."""

    fleetline: FleetlineSide
    dark: FleetlineSide
    bare: BareCelerySide
    dramatiq: DramatiqSide
    shape: Shape
    unguarded: FleetlineSide

    @classmethod
    def start(cls, bench: Bench, sizes: Sizes) -> NoopStack:
        conc = sizes.noop_concurrency
        metrics_dir = bench.workdir / "metrics"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        fleetline = FleetlineSide(
            bench,
            "fleetline",
            env=fleet_env(
                sizes,
                pool="threads",
                concurrency=conc,
                PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            ),
        )
        dark = FleetlineSide(
            bench,
            "fleetline_dark",
            env={**fleet_env(sizes, pool="threads", concurrency=conc), **DARK_ENV},
        )
        unguarded = FleetlineSide(
            bench,
            "fleetline_unguarded",
            env={
                **fleet_env(
                    sizes,
                    pool="threads",
                    concurrency=conc,
                    PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                ),
                **UNGUARDED_ENV,
            },
        )
        bare = BareCelerySide(
            bench, "bare_celery", pool="threads", concurrency=conc, result_expires_s=sizes.ttl_s
        )
        dramatiq = DramatiqSide(
            bench,
            "dramatiq",
            env={"BENCH_RESULT_EXPIRES_S": str(sizes.ttl_s)},
            processes=len(worker_types()),
            threads=conc,
        )
        sides = [fleetline, unguarded, dark, bare, dramatiq]
        start_all(sides)
        try:
            assert fleetline.settings is not None
            shape = check_bare_queues(shape_of(fleetline.settings, sizes.docs))
        except BaseException:
            stop_all(sides)
            raise
        return cls(fleetline, dark, bare, dramatiq, shape, unguarded)

    def sides(self) -> list[Any]:
        return [self.fleetline, self.unguarded, self.dark, self.bare, self.dramatiq]

    def stop(self) -> None:
        stop_all(self.sides())


@dataclass
class Context:
    bench: Bench
    sizes: Sizes
    shared: dict[str, Any] = field(default_factory=dict)
    _noop: NoopStack | None = None

    def noop(self) -> NoopStack:
        if self._noop is None:
            self._noop = NoopStack.start(self.bench, self.sizes)
        return self._noop

    def close(self) -> None:
        if self._noop is not None:
            self._noop.stop()
            self._noop = None
