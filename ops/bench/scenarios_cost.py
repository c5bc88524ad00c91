"""Cost scenario on the no-op stack: Redis work per subtask (memory: scenarios_memory)."""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from ops.bench.context import Context
from ops.bench.harness import Sample, alternate
from ops.bench.jobs import run_burst
from ops.bench.redis_probe import Monitor, snapshot
from ops.bench.scenario import med, pairwise, ratio_text, result
from ops.bench.stats import ratio

log = logging.getLogger("ops.bench")

# Acks and result writes land just after the completion mark a poll sees.
SETTLE_S = 0.3


def _cost_run(ctx: Context, monitor: Monitor, side: Any) -> Sample:
    stack, bench = ctx.noop(), ctx.bench
    admin = bench.client()
    a = snapshot(admin)
    time.sleep(ctx.sizes.cost_idle_s)
    b = snapshot(admin)
    polls0 = list(side.polls)
    run = run_burst(side, stack.shape, ctx.sizes.cost_jobs, poll_s=0.1)
    time.sleep(SETTLE_S)
    c = snapshot(admin)
    own_rt, own_cmds = side.polls[0] - polls0[0], side.polls[1] - polls0[1]
    monitor.sync(bench.client(side.db))
    idle, busy = b.minus(a), c.minus(b)
    scale = busy["seconds"] / idle["seconds"]
    commands = busy["commands"] - idle["commands"] * scale - own_cmds
    reads = busy["reads"] - idle["reads"] * scale - own_rt
    idle_db = monitor.window(side.db, a.at, b.at)
    seen = monitor.window(side.db, b.at, c.at)
    client_cmds = sum(seen["client"].values()) - sum(idle_db["client"].values()) * scale - own_cmds
    lua_cmds = sum(seen["lua"].values())
    n = run.subtasks
    # Every subtask and each job's callback (Fleetline's fan-in, the chord body).
    steps = run.subtasks + run.jobs
    by_cmd = {
        origin: {k: round(v / n, 3) for k, v in counter.most_common(25)}
        for origin, counter in seen.items()
    }
    return {
        "jobs": run.jobs,
        "subtasks": n,
        "commands_per_subtask": round(commands / n, 3),
        "round_trips_per_subtask": round(reads / n, 3),
        "client_commands_per_subtask": round(client_cmds / n, 3),
        "script_commands_per_subtask": round(lua_cmds / n, 3),
        "commands_per_job": round(commands / run.jobs, 2),
        "round_trips_per_job": round(reads / run.jobs, 2),
        "steps": steps,
        "commands_per_step": round(commands / steps, 3),
        "round_trips_per_step": round(reads / steps, 3),
        "by_command_per_subtask": by_cmd,
        "benchmark_polls": {"round_trips": own_rt, "commands": own_cmds},
    }


def redis_cost(ctx: Context) -> dict[str, Any]:
    stack, bench = ctx.noop(), ctx.bench
    monitor = Monitor(redis.Redis(port=bench.server.port))
    monitor.start()
    try:
        samples = alternate(
            [stack.fleetline, stack.bare],
            ctx.sizes.reps,
            lambda side, _: _cost_run(ctx, monitor, side),
            warmup=lambda side: run_burst(side, stack.shape, 5),
        )
    finally:
        monitor.stop(bench.client(0))
    keys = (
        "commands_per_subtask",
        "round_trips_per_subtask",
        "client_commands_per_subtask",
        "script_commands_per_subtask",
        "commands_per_job",
        "round_trips_per_job",
        "commands_per_step",
        "round_trips_per_step",
    )
    f = {k: med(samples["fleetline"], k) for k in keys}
    b = {k: med(samples["bare_celery"], k) for k in keys}
    f["by_command_per_subtask"] = samples["fleetline"][-1]["by_command_per_subtask"]
    b["by_command_per_subtask"] = samples["bare_celery"][-1]["by_command_per_subtask"]
    extra_rt = (f["round_trips_per_subtask"] or 0) - (b["round_trips_per_subtask"] or 0)
    extra_cmds = (f["commands_per_subtask"] or 0) - (b["commands_per_subtask"] or 0)
    rt_step = pairwise(samples["fleetline"], samples["bare_celery"], "round_trips_per_step")
    f_step, b_step = f["round_trips_per_step"] or 0, b["round_trips_per_step"] or 0
    return result(
        fleetline=f,
        baseline=b,
        ratio={
            "commands": ratio(f["commands_per_subtask"] or 0, b["commands_per_subtask"] or 0),
            "round_trips": ratio(
                f["round_trips_per_subtask"] or 0, b["round_trips_per_subtask"] or 0
            ),
            "extra_round_trips_per_subtask": extra_rt,
            "extra_commands_per_subtask": extra_cmds,
            "round_trips_per_step": ratio(f_step, b_step),
            "round_trips_per_step_pairwise": rt_step,
        },
        target="Redis round trips per step <= bare Celery's",
        target_met=f_step <= b_step,
        headline={
            "fleetline": f"{f['round_trips_per_step']} RT, {f['commands_per_step']} cmds / step",
            "baseline": f"{b['round_trips_per_step']} RT, {b['commands_per_step']} cmds / step",
            "ratio": f"RT {ratio_text(rt_step)}; +{extra_rt:.2f} RT, +{extra_cmds:.1f} cmds "
            "/ subtask",
        },
        samples=samples,
        notes=[
            "Per header subtask and per step (a subtask or a job's callback), all traffic of "
            "the job included (submit, chord bookkeeping, callback, job record). "
            "`commands` = INFO total_commands_processed, which counts "
            "both an EVALSHA and every redis.call() inside it; `client_commands` are the "
            "commands clients sent (MONITOR lines not tagged lua); `script_commands` the "
            "ones scripts ran. `round_trips` = INFO total_reads_processed (one read event "
            "per request or pipeline).",
            "Idle traffic (blocked BRPOP timeouts, beat, the other sides) is measured for "
            f"{ctx.sizes.cost_idle_s:g} s before each run and subtracted pro rata; the "
            "benchmark's own completion polls are counted and subtracted. MONITOR is on, "
            "so nothing here is timed.",
        ],
    )
