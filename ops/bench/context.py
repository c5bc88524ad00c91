"""What scenarios share: the run's sizes, and one no-op stack started once for all of them.

The no-op stack is Fleetline (one worker per worker type, plus beat), bare Celery (one
worker per queue, same flags) and Dramatiq, each on a database of its own, all with the
same pool and concurrency. Runs are told apart by their own job ids and run ids, so the
databases never need flushing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fleetline.shared.names import WorkerType
from ops.bench.harness import Bench
from ops.bench.jobs import Shape, shape_of
from ops.bench.plan import Sizes
from ops.bench.sides import FleetlineSide, start_all, stop_all
from ops.bench.sides_bare import BareCelerySide, DramatiqSide


def fleet_env(
    sizes: Sizes, *, pool: str, concurrency: int, latency_ms: float = 0.0, **extra: str
) -> dict[str, str]:
    """FLEETLINE_ settings of a benchmark fleet: every worker type gets the same pool."""
    env = {
        "FLEETLINE_SIM_LATENCY_MS": f"{latency_ms:g}",
        "FLEETLINE_LIMITS_FINISHED_TTL_S": str(sizes.ttl_s),
        "FLEETLINE_CELERY_RESULT_EXPIRES_S": str(sizes.ttl_s),
    }
    for wt in WorkerType:
        env[f"FLEETLINE_WORKERS__{wt.value.upper()}__POOL"] = pool
        env[f"FLEETLINE_WORKERS__{wt.value.upper()}__CONCURRENCY"] = str(concurrency)
        env[f"FLEETLINE_WORKERS__{wt.value.upper()}__CACHE_TTL_S"] = str(sizes.ttl_s)
    env.update(extra)
    return env


@dataclass
class NoopStack:
    """The three sides of the no-op scenarios, started together."""

    fleetline: FleetlineSide
    bare: BareCelerySide
    dramatiq: DramatiqSide
    shape: Shape

    @classmethod
    def start(cls, bench: Bench, sizes: Sizes) -> NoopStack:
        conc = sizes.noop_concurrency
        fleetline = FleetlineSide(
            bench, "fleetline", env=fleet_env(sizes, pool="threads", concurrency=conc)
        )
        bare = BareCelerySide(
            bench, "bare_celery", pool="threads", concurrency=conc, result_expires_s=sizes.ttl_s
        )
        dramatiq = DramatiqSide(
            bench,
            "dramatiq",
            env={"BENCH_RESULT_EXPIRES_S": str(sizes.ttl_s)},
            processes=len(WorkerType),
            threads=conc,
        )
        start_all([fleetline, bare, dramatiq])
        assert fleetline.settings is not None
        return cls(fleetline, bare, dramatiq, shape_of(fleetline.settings, sizes.docs))

    def stop(self) -> None:
        stop_all([self.fleetline, self.bare, self.dramatiq])


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
