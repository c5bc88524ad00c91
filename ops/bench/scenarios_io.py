"""I/O-bound concurrency: model calls that each wait, on one worker container of 2 cores.

Fleetline runs one threads-pool worker for every queue; the baseline is bare Celery's
default, prefork with one child per core, and bare Celery threads at Fleetline's
concurrency shows how much of the gap is the pool. Threads enforce no Celery time limit,
so a probe checks that the per-call timeout still cuts a stalled call.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from fleetline.shared import keys
from ops.bench.context import Context, fleet_env
from ops.bench.harness import Sample, alternate
from ops.bench.jobs import Shape, run_burst, shape_of
from ops.bench.scenario import med, result
from ops.bench.sides import FleetlineSide, start_all, stop_all
from ops.bench.sides_bare import BareCelerySide, check_bare_queues
from ops.bench.stats import median, ratio

log = logging.getLogger("ops.bench")

SIDES = ("fleetline", "bare_prefork", "bare_threads")
PROBE_JOBS = 20
PROBE_MAX_CALL_S = 1.0
# Cut at max_call_s means well under the 60 s stall; a busy 2-core box wakes a thread late.
PROBE_SLACK_S = 1.0


def _outcomes(side: FleetlineSide, job_ids: list[str]) -> list[dict[str, Any]]:
    pipe = side.bench.client(side.db).pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hvals(keys.job_outcomes(job_id))
    return [json.loads(raw) for values in pipe.execute() for raw in values]


def in_flight(log_path: Path, start: float, end: float, call_s: float) -> dict[str, Any]:
    """Calls in flight over time, from a call log (start times) and the known call length.

    `peak`: most at once; `busy_mean`/`busy_p50`: time-weighted over the span from the
    first call's start to the last call's end (no ramp-up before, no idle tail after).
    """
    starts = []
    with open(log_path) as f:
        for line in f:
            t = json.loads(line)["t"]
            if start <= t <= end:
                starts.append(t)
    if not starts:
        return {"calls": 0, "peak": 0, "busy_mean": 0.0, "busy_p50": 0.0}
    events = sorted([(t, 1) for t in starts] + [(t + call_s, -1) for t in starts])
    level, peak, last_t = 0, 0, events[0][0]
    time_at: dict[int, float] = {}
    for t, step in events:
        time_at[level] = time_at.get(level, 0.0) + (t - last_t)
        level += step
        peak = max(peak, level)
        last_t = t
    span = sum(time_at.values())
    mean = sum(lvl * dt for lvl, dt in time_at.items()) / span if span else 0.0
    acc, p50 = 0.0, 0
    for lvl in sorted(time_at):
        acc += time_at[lvl]
        if acc >= span / 2:
            p50 = lvl
            break
    return {"calls": len(starts), "peak": peak, "busy_mean": round(mean, 1), "busy_p50": p50}


def _fleetline_run(
    side: FleetlineSide, shape: Shape, jobs: int, call_log: Path, call_s: float
) -> Sample:
    r = run_burst(side, shape, jobs, poll_s=0.05)
    outcomes = _outcomes(side, r.job_ids)
    busy_s = sum(o["latency_ms"] for o in outcomes) / 1000
    flight = in_flight(call_log, r.started, r.finished, call_s)
    return {
        **r.sample(),
        "model_calls": flight["calls"],
        "outcomes_ok": sum(o["status"] == "ok" for o in outcomes),
        "outcomes": len(outcomes),
        "achieved_concurrency": round(busy_s / r.wall_s, 1),
        "peak_in_flight": flight["peak"],
        "busy_mean_in_flight": flight["busy_mean"],
        "median_call_ms": round(median([o["latency_ms"] for o in outcomes]), 1),
    }


def _bare_run(
    side: BareCelerySide, shape: Shape, jobs: int, call_log: Path, call_s: float
) -> Sample:
    r = run_burst(side, shape, jobs, poll_s=0.05)
    flight = in_flight(call_log, r.started, r.finished, call_s)
    return {
        **r.sample(),
        "model_calls": flight["calls"],
        "achieved_concurrency": round(flight["calls"] * call_s / r.wall_s, 1),
        "peak_in_flight": flight["peak"],
        "busy_mean_in_flight": flight["busy_mean"],
    }


def _probe(side: FleetlineSide, shape: Shape) -> dict[str, Any]:
    """Stalled analysis calls on the threads pool: the per-call timeout must end them."""
    r = run_burst(side, shape, PROBE_JOBS, poll_s=0.05)
    stalled = [o for o in _outcomes(side, r.job_ids) if o["worker_type"] == "analysis"]
    timed_out = [o for o in stalled if o["status"] == "timed_out"]
    worst_ms = max((o["latency_ms"] for o in stalled), default=0.0)
    return {
        "stalled_calls": len(stalled),
        "timed_out": len(timed_out),
        "max_call_s_setting": PROBE_MAX_CALL_S,
        "worst_call_ms": round(worst_ms, 1),
        "job_wall_s": round(r.wall_s, 2),
        "median_call_ms": round(median([o["latency_ms"] for o in stalled]), 1) if stalled else None,
        # A 60 s stall cut at about max_call_s (plus queueing under load) is enforced.
        "enforced": len(timed_out) == len(stalled) > 0
        and worst_ms <= (PROBE_MAX_CALL_S + PROBE_SLACK_S) * 1000,
    }


def _cpu_per_call(samples: list[Sample]) -> float | None:
    return med([{"v": s["worker_cpu_s"] / s["model_calls"] * 1000} for s in samples], "v", 2)


def io_concurrency(ctx: Context) -> dict[str, Any]:
    bench, sizes = ctx.bench, ctx.sizes
    call_s = sizes.io_latency_ms / 1000
    conc, cores = sizes.io_concurrency, os.cpu_count() or 2
    logs = {name: bench.workdir / f"calls-{name}.jsonl" for name in SIDES}
    env = fleet_env(
        sizes,
        pool="threads",
        concurrency=conc,
        latency_ms=sizes.io_latency_ms,
        FLEETLINE_SIM_CALL_LOG=str(logs["fleetline"]),
    )
    fleetline = FleetlineSide(bench, "fleetline", env=env, single=True)
    prefork = BareCelerySide(
        bench,
        "bare_prefork",
        pool="prefork",
        concurrency=cores,
        single=True,
        sleep_ms=sizes.io_latency_ms,
        env={"BENCH_CALL_LOG": str(logs["bare_prefork"])},
    )
    threads = BareCelerySide(
        bench,
        "bare_threads",
        pool="threads",
        concurrency=conc,
        single=True,
        sleep_ms=sizes.io_latency_ms,
        env={"BENCH_CALL_LOG": str(logs["bare_threads"])},
    )
    probe = FleetlineSide(
        bench,
        "fleetline_probe",
        single=True,
        with_beat=False,
        env=fleet_env(
            sizes,
            pool="threads",
            concurrency=conc,
            latency_ms=sizes.io_latency_ms,
            FLEETLINE_SIM_STALL_TYPES="analysis",
            FLEETLINE_SIM_STALL_MS="60000",
            FLEETLINE_WORKERS__ANALYSIS__MAX_CALL_S=f"{PROBE_MAX_CALL_S:g}",
            FLEETLINE_WORKERS__ANALYSIS__MAX_RETRIES="0",
            # One call per subtask: a fallback model would stall again and add a second.
            FLEETLINE_WORKERS__ANALYSIS__FALLBACK_TIERS="[]",
        ),
    )
    sides: list[Any] = [fleetline, prefork, threads, probe]
    try:
        start_all(sides)
        assert fleetline.settings is not None
        shape = check_bare_queues(shape_of(fleetline.settings, sizes.io_docs))
        jobs = max(1, round(sizes.io_subtasks / shape.subtasks))
        prefork_jobs = max(1, round(sizes.io_prefork_subtasks / (shape.subtasks + 1)))

        def run(side: Any, _: int) -> Sample:
            if side is fleetline:
                return _fleetline_run(fleetline, shape, jobs, logs[side.name], call_s)
            n = prefork_jobs if side is prefork else jobs
            return _bare_run(side, shape, n, logs[side.name], call_s)

        samples = alternate(
            [fleetline, prefork, threads],
            sizes.io_reps,
            run,
            # Prefork needs no warm-up for sleeping tasks, and one job of it takes 2.5 s.
            warmup=lambda side: None if side is prefork else run_burst(side, shape, 10),
            retries=sizes.noisy_retries,
        )
        probed = _probe(probe, shape_of(fleetline.settings, 4))
    finally:
        stop_all(sides)
    keys_ = (
        "achieved_concurrency",
        "busy_mean_in_flight",
        "peak_in_flight",
        "jobs_per_s",
        "subtasks_per_s",
        "wall_s",
    )
    f = {k: med(samples["fleetline"], k, 2) for k in keys_}
    f["median_call_ms"] = med(samples["fleetline"], "median_call_ms", 1)
    f["worker_cpu_ms_per_call"] = _cpu_per_call(samples["fleetline"])
    p = {k: med(samples["bare_prefork"], k, 2) for k in keys_}
    t = {k: med(samples["bare_threads"], k, 2) for k in keys_}
    t["worker_cpu_ms_per_call"] = _cpu_per_call(samples["bare_threads"])
    achieved = f["achieved_concurrency"] or 0.0
    return result(
        fleetline={**f, "time_limit_probe": probed},
        baseline=p,
        ratio={
            "concurrency_vs_prefork": ratio(achieved, p["achieved_concurrency"] or 0),
            "concurrency_vs_bare_threads": ratio(achieved, t["achieved_concurrency"] or 0),
        },
        target=">= 100 model calls in flight from one 2-core worker, time limits enforced",
        target_met=achieved >= 100 and probed["enforced"],
        headline={
            "fleetline": f"{achieved:.0f} in flight (peak {f['peak_in_flight']:.0f}), "
            f"{f['subtasks_per_s']} subtasks/s",
            "baseline": f"prefork -c {cores}: {p['achieved_concurrency']} in flight; "
            f"threads -c {conc}: {t['achieved_concurrency']}",
            "ratio": f"{ratio(achieved, p['achieved_concurrency'] or 0):.0f}x prefork, "
            f"{ratio(achieved, t['achieved_concurrency'] or 0):.2f}x bare threads",
        },
        samples=samples,
        notes=[
            f"Every model call waits {sizes.io_latency_ms:g} ms (sim latency; bare: "
            f"time.sleep). Fleetline: {jobs} research_brief jobs of {shape.docs} documents "
            f"({shape.subtasks} subtasks + synthesis, all waiting) on ONE threads worker "
            f"-c {conc} consuming every queue. Bare prefork -c {cores} runs {prefork_jobs} "
            "such jobs per repetition (it keeps 2 calls in flight), bare threads "
            f"-c {conc} the same {jobs}.",
            "achieved concurrency = sum of call latencies / wall time (mean calls in "
            "flight, ramp-up and tail included); peak = most calls in flight at once, "
            "from the sim's call log.",
            f"Time-limit probe: analysis calls stall for 60 s, max_call_s={PROBE_MAX_CALL_S:g}, "
            "no retries, threads pool (which enforces no Celery time limit): every stalled "
            f"call must end timed_out within max_call_s + {PROBE_SLACK_S:g} s.",
        ],
        bare_threads=t,
    )
