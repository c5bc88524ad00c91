"""Cost scenarios on the no-op stack: Redis work per subtask, and memory (Redis and RSS)."""

from __future__ import annotations

import logging
import time
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]  # no types-psutil in the venv
import redis

from ops.bench.context import Context
from ops.bench.harness import Sample, alternate, tree_rss_mb
from ops.bench.jobs import run_burst, shape_of
from ops.bench.redis_probe import Monitor, census, growth, keys_of, sizes_of, snapshot
from ops.bench.scenario import med, pairwise, ratio_text, result
from ops.bench.stats import quartile_medians, ratio

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


def _labels(side: Any) -> list[str]:
    if hasattr(side, "fleet"):
        return list(side.fleet.processes)
    return [f"worker{i}" for i in range(len(side.procs))]


def _memory_side(ctx: Context, side: Any, jobs: int) -> dict[str, Any]:
    stack, bench, sizes = ctx.noop(), ctx.bench, ctx.sizes
    assert stack.fleetline.settings is not None
    small = shape_of(stack.fleetline.settings, sizes.memory_docs)
    client = bench.client(side.db)
    run_burst(side, stack.shape, 10)
    run_burst(side, small, 10)
    known = keys_of(client)
    start_sizes = sizes_of(client, known)
    # Bytes per job of the standard job, read before any of its TTLs can pass: the keys it
    # made, and what it added to keys that were there before (shared counters, indexes).
    run_burst(side, stack.shape, sizes.memory_bytes_jobs)
    bytes_census = census(client, known)
    grew = growth(start_sizes, sizes_of(client, known))
    n = sizes.memory_bytes_jobs
    out: dict[str, Any] = {
        "jobs": jobs,
        "rss_run_subtasks_per_job": small.subtasks,
        "bytes_per_job": round((bytes_census["bytes"] + grew["bytes"]) / n),
        "bytes_per_job_new_keys": round(bytes_census["bytes"] / n),
        "bytes_per_job_existing_keys_growth": round(grew["bytes"] / n),
        "keys_per_job": round(bytes_census["keys"] / n, 2),
        "bytes_run": {"jobs": n, "census": bytes_census, "existing_keys_growth": grew},
    }
    me = psutil.Process()
    pids = dict(zip(_labels(side), [p.pid for p in side.procs], strict=False))
    series: dict[str, list[float]] = {"producer": [], **{k: [] for k in pids}}
    last = [0.0]

    def tick() -> None:
        if time.monotonic() - last[0] < 0.5:
            return
        last[0] = time.monotonic()
        series["producer"].append(me.memory_info().rss / 2**20)
        for label, pid in pids.items():
            series[label].append(round(sum(tree_rss_mb([pid]).values()), 2))

    r = run_burst(side, small, jobs, window=sizes.memory_window, tick=tick)
    out["wall_s"] = round(r.wall_s, 2)
    out["finished_at"] = r.finished
    out["census_after_run"] = census(client, known)
    # Keys that existed before the runs (queues, indexes, shared counters) must not grow
    # with every job; `no_ttl` growth would never go.
    out["existing_keys_growth_after_run"] = growth(start_sizes, sizes_of(client, known))
    rss: dict[str, Any] = {}
    for label, values in series.items():
        first, last_q = quartile_medians(values)
        rss[label] = {
            "first_quartile_mb": round(first, 1),
            "last_quartile_mb": round(last_q, 1),
            "growth_pct": round((last_q - first) / first * 100, 2) if first else None,
            "samples_mb": [round(v, 1) for v in values],
        }
    out["rss"] = rss
    out["known_keys"] = known
    return out


def _per_job_without_ttl(found: dict[str, Any]) -> int:
    """Keys without a TTL in families of more than one key (a singleton is not a leak)."""
    return sum(r["no_ttl"] for r in found["by_pattern"].values() if r["keys"] > 1)


def _left(side: dict[str, Any]) -> str:
    if side["keys_left"] is None:
        return f"{side['keys_left_without_ttl']} per-job keys without TTL"
    return (
        f"{side['keys_left']} keys left after TTL "
        f"({side['keys_left_without_ttl']} per-job keys without TTL)"
    )


def memory(ctx: Context) -> dict[str, Any]:
    stack, sizes = ctx.noop(), ctx.sizes
    f = _memory_side(ctx, stack.fleetline, sizes.memory_jobs)
    b = _memory_side(ctx, stack.bare, sizes.memory_baseline_jobs)
    notes = [
        f"Fleetline and bare Celery run with finished-job TTL and result_expires of "
        f"{sizes.ttl_s} s. Bytes per job = MEMORY USAGE of the keys a run of "
        f"{sizes.memory_bytes_jobs} standard jobs created, read right after it (before any "
        "TTL passed). RSS sampled every 0.5 s over a run of "
        f"{sizes.memory_jobs} jobs of {sizes.memory_docs} document(s) (bare: "
        f"{sizes.memory_baseline_jobs}) with at most {sizes.memory_window} unfinished at "
        "once; flat = last-quartile median within 10 % of the first-quartile median for "
        "the producer and every worker. Bytes per job include what the jobs added to keys "
        "that existed before (shared counters such as the spend window hashes).",
    ]
    for side in (f, b):
        side["no_ttl_after_run"] = side["census_after_run"]["no_ttl"]
    if sizes.memory_wait_ttl:
        wake = max(f["finished_at"], b["finished_at"]) + sizes.ttl_s + 5
        log.info(" waiting %.0f s for TTLs to pass", max(0.0, wake - time.time()))
        time.sleep(max(0.0, wake - time.time()))
        for side, runner in ((f, stack.fleetline), (b, stack.bare)):
            after = census(ctx.bench.client(runner.db), side["known_keys"])
            side["census_after_ttl"] = after
            side["keys_left"] = after["keys"]
            side["keys_left_without_ttl"] = _per_job_without_ttl(after)
        notes.append(
            "Keys left = keys the runs created still there once the configured TTLs "
            f"({sizes.ttl_s} s) passed; `census_after_ttl.by_pattern` shows which, with "
            "their remaining TTL (keys with a fixed TTL of their own outlive the setting)."
        )
    else:
        for side in (f, b):
            side["keys_left"] = None
            side["keys_left_without_ttl"] = _per_job_without_ttl(side["census_after_run"])
        notes.append(
            "Quick mode does not wait out the TTLs: it checks the keys the run created for "
            "no TTL (TTL -1: never go; a family of one key, a singleton, is not counted) and "
            "for Fleetline keys whose TTL is longer than the TTL settings (they outlive "
            "them: fixed TTLs in shared/keys.py)."
        )
    for side in (f, b):
        side.pop("known_keys")
    leaked = f["keys_left_without_ttl"]
    # Fleetline's own keys that outlive the configured TTLs (the baseline has none).
    final = f.get("census_after_ttl") or f["census_after_run"]
    limit = 0 if sizes.memory_wait_ttl else sizes.ttl_s + 5
    outliving = {
        pattern: row
        for pattern, row in final["by_pattern"].items()
        if pattern.startswith("fl:") and row["max_ttl_s"] > limit
    }
    f["fleetline_keys_outliving_ttl"] = outliving
    persistent_growth = f["existing_keys_growth_after_run"]["no_ttl"]
    shared_top = next(iter(f["bytes_run"]["existing_keys_growth"]["by_pattern"]), "none")
    flat = all((v["growth_pct"] or 0) <= 10 for v in f["rss"].values() if v["first_quartile_mb"])
    worst = max(f["rss"].items(), key=lambda kv: kv[1]["growth_pct"] or 0)
    return result(
        fleetline=f,
        baseline=b,
        ratio={"bytes_per_job": ratio(f["bytes_per_job"], b["bytes_per_job"])},
        target="keys back to baseline once TTLs pass (none without TTL, no Fleetline key "
        "outliving the TTL settings); RSS flat",
        target_met=leaked == 0 and not persistent_growth and not outliving and flat,
        headline={
            "fleetline": f"{f['bytes_per_job']} B/job ({f['bytes_per_job_existing_keys_growth']} "
            f"into existing keys, most {shared_top}), {_left(f)}, "
            f"{sum(r['keys'] for r in outliving.values())} fl: keys outlive the TTL "
            f"({', '.join(sorted({':'.join(p.split(':')[:3]) for p in outliving})) or 'none'}), "
            f"RSS worst {worst[0]} "
            f"{worst[1]['growth_pct']:+.1f} %",
            "baseline": f"{b['bytes_per_job']} B/job, {_left(b)}",
            "ratio": f"{f['bytes_per_job'] / b['bytes_per_job']:.2f}x bytes",
        },
        notes=notes,
        target_detail={
            "keys_without_ttl": leaked,
            "fleetline_keys_outliving_ttl": sum(r["keys"] for r in outliving.values()),
            "growth_of_keys_without_ttl": persistent_growth,
            "rss_flat": flat,
        },
    )
