"""What each guard costs: the throughput burst with every guard, with none, and with each
one alone on (FLEETLINE_WORKER_GUARDS), and with tracing and metrics off.

Every configuration is a Fleetline fleet of its own (one worker for every queue, no beat:
beat's housekeeping is no guard's), all started at once and alternated in rotated order,
each burst pre-enqueued; bare Celery (one worker for every queue) runs beside them as the
reference. A guard's cost is its configuration against "none": the worker CPU, Redis CPU,
commands and round trips it adds per step, and its throughput against none's, pairwise.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from fleetline.shared.settings import GUARD_NAMES
from ops.bench.context import DARK_ENV, Context, fleet_env
from ops.bench.harness import Sample, alternate
from ops.bench.jobs import Shape, run_burst, shape_of
from ops.bench.redis_probe import snapshot
from ops.bench.scenario import med, pairwise, per_step_ms, ratio_text, result
from ops.bench.sides import FleetlineSide, start_all, stop_all
from ops.bench.sides_bare import BareCelerySide, check_bare_queues

log = logging.getLogger("ops.bench")

# Acks and the last writes land just after the completion mark a poll sees.
SETTLE_S = 0.3
ALL, NONE, DARK, BARE = "all", "none", "all_dark", "bare_celery"


@dataclass(frozen=True)
class Config:
    """One side of the scenario: its name and what FLEETLINE_WORKER_GUARDS it runs."""

    name: str
    guards: str
    dark: bool = False


def configs() -> list[Config]:
    """Every guard, none, each one alone, and every guard with tracing and metrics off."""
    return [
        Config(ALL, "all"),
        Config(NONE, "none"),
        *(Config(name, name) for name in GUARD_NAMES),
        Config(DARK, "all", dark=True),
    ]


def _run(ctx: Context, side: Any, shape: Shape) -> Sample:
    admin = ctx.bench.client()
    polls0 = list(side.polls)
    before = snapshot(admin)
    run = run_burst(side, shape, ctx.sizes.guards_jobs, pre_enqueue=True)
    time.sleep(SETTLE_S)
    used = snapshot(admin).minus(before)
    # The benchmark's own completion polls, and the snapshot (one pipeline of three INFO).
    own_rt = side.polls[0] - polls0[0] + 1
    own_cmds = side.polls[1] - polls0[1] + 3
    sample = run.sample()
    steps = sample["steps"]
    sample.update(
        round_trips_per_step=round((used["reads"] - own_rt) / steps, 3),
        commands_per_step=round((used["commands"] - own_cmds) / steps, 3),
    )
    return sample


def _summary(samples: list[Sample]) -> dict[str, Any]:
    return {
        "jobs_per_s": med(samples, "jobs_per_s", 2),
        "worker_cpu_ms_per_step": per_step_ms(samples, "worker_cpu_s"),
        "redis_cpu_ms_per_step": per_step_ms(samples, "redis_cpu_s"),
        "round_trips_per_step": med(samples, "round_trips_per_step"),
        "commands_per_step": med(samples, "commands_per_step"),
        "foreign_cpu_s": med(samples, "foreign_cpu_s"),
    }


def _added(on: dict[str, Any], off: dict[str, Any]) -> dict[str, float | None]:
    keys = ("worker_cpu_ms_per_step", "redis_cpu_ms_per_step", "round_trips_per_step")
    out: dict[str, float | None] = {}
    for key in (*keys, "commands_per_step"):
        a, b = on.get(key), off.get(key)
        out[key] = None if a is None or b is None else round(float(a) - float(b), 4)
    return out


def _sides(ctx: Context) -> list[Any]:
    sizes, bench = ctx.sizes, ctx.bench
    metrics_dir = bench.workdir / "metrics-guards"
    metrics_dir.mkdir(parents=True, exist_ok=True)
    sides: list[Any] = []
    for config in configs():
        env = fleet_env(sizes, pool="threads", concurrency=sizes.noop_concurrency)
        if config.dark:
            env.update(DARK_ENV)
        else:
            env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        env["FLEETLINE_WORKER_GUARDS"] = config.guards
        sides.append(FleetlineSide(bench, config.name, env=env, single=True, with_beat=False))
    sides.append(
        BareCelerySide(
            bench,
            BARE,
            pool="threads",
            concurrency=sizes.noop_concurrency,
            single=True,
            result_expires_s=sizes.ttl_s,
        )
    )
    return sides


def guards(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes
    sides = _sides(ctx)
    log.info(" starting %d fleets (one worker each)", len(sides))
    try:
        start_all(sides)
        settings = sides[0].settings
        assert settings is not None
        shape = check_bare_queues(shape_of(settings, sizes.docs))
        samples = alternate(
            sides,
            sizes.guards_reps,
            lambda side, _: _run(ctx, side, shape),
            warmup=lambda side: run_burst(side, shape, 10),
            retries=sizes.noisy_retries,
        )
    finally:
        stop_all(sides)
    summaries = {name: _summary(v) for name, v in samples.items() if "~" not in name}
    none, every = summaries[NONE], summaries[ALL]
    for name, summary in summaries.items():
        if name in (BARE, NONE):
            continue
        summary["added_over_none"] = _added(summary, none)
        summary["jobs_per_s_over_none"] = pairwise(samples[name], samples[NONE], "jobs_per_s")
    summaries[BARE]["fleetline_all_over_bare"] = pairwise(samples[ALL], samples[BARE], "jobs_per_s")
    alone = [summaries[g]["added_over_none"]["worker_cpu_ms_per_step"] for g in GUARD_NAMES]
    r = pairwise(samples[ALL], samples[NONE], "jobs_per_s")
    dark = pairwise(samples[ALL], samples[DARK], "jobs_per_s")
    return result(
        fleetline=every,
        baseline=none,
        ratio={
            "all_over_none_pairwise": r,
            "all_over_dark_pairwise": dark,
            "all_over_bare_pairwise": summaries[BARE]["fleetline_all_over_bare"],
            "sum_of_each_alone_worker_cpu_ms_per_step": (
                None if None in alone else round(sum(a for a in alone if a is not None), 4)
            ),
        },
        target="none (what each guard costs: reference figures)",
        target_met=None,
        headline={
            "fleetline": f"every guard: {every['jobs_per_s']} jobs/s, "
            f"{every['worker_cpu_ms_per_step']} ms worker CPU / step",
            "baseline": f"no guard: {none['jobs_per_s']} jobs/s, "
            f"{none['worker_cpu_ms_per_step']} ms worker CPU / step",
            "ratio": ratio_text(r),
        },
        configs=summaries,
        guard_order=list(GUARD_NAMES),
        samples=samples,
        notes=[
            "Guards: one Fleetline fleet per configuration (FLEETLINE_WORKER_GUARDS = all, "
            "none, each guard alone; and all with tracing and metrics off), each a single "
            "threads worker for every queue and no beat, plus bare Celery as one worker; "
            f"bursts of {sizes.guards_jobs} pre-enqueued jobs, rotated order, every other "
            "side paused. A guard's cost = its configuration minus none (per step: a "
            "subtask or a job's callback); round trips and commands per step from INFO, "
            "the benchmark's polls subtracted. Guards share their round trips, so one "
            "alone costs about what its commands and CPU add, not a trip of its own.",
        ],
    )
