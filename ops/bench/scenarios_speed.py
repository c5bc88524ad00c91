"""Speed scenarios on the no-op stack: throughput, latency, fan-out, and the Dramatiq peer.

Sim latency is 0, so every figure is framework overhead: Fleetline's guards, state store
and synthesis against a bare Celery chord of the same headers on the same queues.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from ops.bench.context import Context
from ops.bench.harness import Sample, alternate
from ops.bench.jobs import Shape, docs_for, run_burst, run_one, shape_of
from ops.bench.scenario import med, pairwise, per_job_ms, per_step_ms, ratio_text, result
from ops.bench.stats import median, percentile, ratio, spread

log = logging.getLogger("ops.bench")

SHAPE_NOTE = (
    "A Fleetline job is research_brief over {docs} one-word documents: {n} subtasks "
    "(2 per document + 1 analysis per 4) plus the synthesis callback, which makes one sim "
    "call. The bare Celery job is a chord of {n} no-op headers on the same queues plus a "
    "callback; Dramatiq's is a group of {n} no-op messages with a completion callback."
)


# Throughput bursts are submitted while the side's workers are held, and timed from
# their release: jobs/s is the workers' rate, never the producer's (both share the CPUs).
PRE_ENQUEUE_NOTE = (
    "Throughput: each burst is submitted while the side's workers are paused (SIGSTOP) and "
    "timed from their release to the last job's completion, so jobs/s is worker "
    "throughput, not the producer's submit rate. The producer runs on its own CPU, Redis "
    "and the workers on the others; every other side's workers are paused during a "
    "sample (Fleetline's beat runs on: RedBeat's lock must not expire). Worker CPU per "
    "step = CPU of all the side's processes (Fleetline: its four workers and beat) per "
    "subtask-or-callback; Redis CPU per step likewise (the completion polls included)."
)


def _burst_summary(samples: list[Sample]) -> dict[str, Any]:
    return {
        "jobs_per_s": med(samples, "jobs_per_s", 2),
        "subtasks_per_s": med(samples, "subtasks_per_s", 1),
        "submit_ms_per_job": med(samples, "submit_ms_per_job"),
        "worker_cpu_ms_per_job": per_job_ms(samples, "worker_cpu_s"),
        "producer_cpu_ms_per_job": per_job_ms(samples, "producer_cpu_s"),
        "redis_cpu_ms_per_job": per_job_ms(samples, "redis_cpu_s"),
        "worker_cpu_ms_per_step": per_step_ms(samples, "worker_cpu_s"),
        "redis_cpu_ms_per_step": per_step_ms(samples, "redis_cpu_s"),
        "foreign_cpu_s": med(samples, "foreign_cpu_s"),
    }


def _pairwise(a: list[Sample], b: list[Sample], key: str) -> float:
    """Median of per-repetition ratios (A_i / B_i): robust to drift across the run."""
    return median([ratio(x[key], y[key]) for x, y in zip(a, b, strict=False)])


def _added(on: dict[str, Any], off: dict[str, Any], key: str) -> float | None:
    if on.get(key) is None or off.get(key) is None:
        return None
    return round(float(on[key]) - float(off[key]), 3)


def burst(side: Any, shape: Shape, jobs: int) -> Sample:
    """One pre-enqueued burst of `jobs` jobs, as a sample."""
    return run_burst(side, shape, jobs, pre_enqueue=True).sample()


def throughput(ctx: Context) -> dict[str, Any]:
    stack, sizes = ctx.noop(), ctx.sizes
    shape = stack.shape
    sides: list[Any] = [stack.fleetline, stack.unguarded, stack.dark, stack.bare]
    with_peer = "peer_dramatiq" in ctx.shared.get("selected", ())
    if with_peer:
        sides.append(stack.dramatiq)
    samples = alternate(
        sides,
        sizes.reps,
        lambda side, _: burst(side, shape, sizes.throughput_jobs),
        warmup=lambda side: run_burst(side, shape, max(10, sizes.throughput_jobs // 10)),
        retries=sizes.noisy_retries,
    )
    if with_peer:
        ctx.shared["peer_samples"] = samples
    fl, bare = samples["fleetline"], samples["bare_celery"]
    f_sum, b_sum = _burst_summary(fl), _burst_summary(bare)
    d_sum = _burst_summary(samples["fleetline_dark"])
    u_sum = _burst_summary(samples["fleetline_unguarded"])
    jobs = pairwise(fl, bare, "jobs_per_s")
    worker = pairwise(fl, bare, "worker_cpu_s", scale="steps")
    redis_cpu = pairwise(fl, bare, "redis_cpu_s", scale="steps")
    r = jobs["median"]
    peer = pairwise(fl, samples["dramatiq"], "jobs_per_s") if with_peer else None
    return result(
        fleetline=f_sum,
        baseline=b_sum,
        tracing_and_metrics_off=d_sum,
        observability_cost={
            "jobs_per_s_on_over_off": ratio(f_sum["jobs_per_s"] or 0, d_sum["jobs_per_s"] or 0),
            "pairwise_median": _pairwise(fl, samples["fleetline_dark"], "jobs_per_s"),
            "worker_cpu_ms_per_job_added": _added(f_sum, d_sum, "worker_cpu_ms_per_job"),
        },
        guards_off=u_sum,
        guards_cost={
            "jobs_per_s_on_over_off": pairwise(fl, samples["fleetline_unguarded"], "jobs_per_s"),
            "worker_cpu_ms_per_step_added": _added(f_sum, u_sum, "worker_cpu_ms_per_step"),
            "redis_cpu_ms_per_step_added": _added(f_sum, u_sum, "redis_cpu_ms_per_step"),
            "unguarded_over_bare": pairwise(samples["fleetline_unguarded"], bare, "jobs_per_s"),
        },
        ratio={
            "jobs_per_s": ratio(f_sum["jobs_per_s"] or 0, b_sum["jobs_per_s"] or 0),
            "pairwise_median": r,
            "pairwise": jobs,
            "worker_cpu_per_step": worker,
            "redis_cpu_per_step": redis_cpu,
        },
        target=">= 1.0x bare Celery chord jobs/s with every guard on (pairwise median)",
        target_met=r is not None and r >= 1.0,
        headline={
            "fleetline": f"{f_sum['jobs_per_s']} jobs/s",
            "baseline": f"{b_sum['jobs_per_s']} jobs/s",
            "ratio": ratio_text(jobs),
        },
        moonshot=">= Dramatiq's group+callback jobs/s (pairwise median)",
        moonshot_met=None if peer is None or peer["median"] is None else peer["median"] >= 1.0,
        worker_cpu_target="worker CPU per step (all worker processes) <= 1.2x bare",
        worker_cpu_target_met=_at_most(worker, 1.2),
        redis_cpu_target="Redis CPU per step <= 1.5x bare",
        redis_cpu_target_met=_at_most(redis_cpu, 1.5),
        samples={k: v for k, v in samples.items() if k != "dramatiq"},
        notes=[SHAPE_NOTE.format(docs=shape.docs, n=shape.subtasks), PRE_ENQUEUE_NOTE],
        shape={"docs": shape.docs, "subtasks": shape.subtasks, "jobs": sizes.throughput_jobs},
    )


def _at_most(r: dict[str, Any], limit: float) -> bool | None:
    return None if r["median"] is None else bool(r["median"] <= limit)


def peer_dramatiq(ctx: Context) -> dict[str, Any]:
    stack, sizes = ctx.noop(), ctx.sizes
    samples = ctx.shared.get("peer_samples")
    if samples is None:
        samples = alternate(
            [stack.fleetline, stack.dramatiq],
            sizes.reps,
            lambda side, _: burst(side, stack.shape, sizes.throughput_jobs),
            warmup=lambda side: run_burst(side, stack.shape, max(10, sizes.throughput_jobs // 10)),
            retries=sizes.noisy_retries,
        )
    fl, dq = samples["fleetline"], samples["dramatiq"]
    f_sum, d_sum = _burst_summary(fl), _burst_summary(dq)
    r = ratio(f_sum["jobs_per_s"] or 0, d_sum["jobs_per_s"] or 0)
    paired = pairwise(fl, dq, "jobs_per_s")
    extra: dict[str, Any] = {}
    if "bare_celery" in samples:
        extra["bare_celery"] = _burst_summary(samples["bare_celery"])
    return result(
        fleetline=f_sum,
        baseline=d_sum,
        ratio={"jobs_per_s": r, "pairwise_median": paired["median"], "pairwise": paired},
        target="none (reference figure; the moonshot: >= 1.0x)",
        target_met=None,
        headline={
            "fleetline": f"{f_sum['jobs_per_s']} jobs/s",
            "baseline": f"Dramatiq {d_sum['jobs_per_s']} jobs/s",
            "ratio": ratio_text(paired),
        },
        samples={"fleetline": fl, "dramatiq": dq},
        notes=[
            SHAPE_NOTE.format(docs=stack.shape.docs, n=stack.shape.subtasks),
            "Dramatiq: Redis broker, Results middleware (results stored), GroupCallbacks "
            "barrier; its callback receives no results (Dramatiq's design), unlike a chord "
            "body. Same Redis server, its own database; --processes 4 --threads 8.",
            "When throughput runs too, these samples come from the same rotated alternation.",
            PRE_ENQUEUE_NOTE,
        ],
        **extra,
    )


def _latency_run(side: Any, shape: Shape, jobs: int) -> Sample:
    recorded, observed = [], []
    for _ in range(jobs):
        r, o = run_one(side, shape)
        recorded.append(r * 1000)
        observed.append(o * 1000)
    return {
        "jobs": jobs,
        "p50_ms": round(percentile(recorded, 50), 3),
        "p99_ms": round(percentile(recorded, 99), 3),
        "observed_p50_ms": round(percentile(observed, 50), 3),
        "latencies_ms": [round(v, 3) for v in recorded],
        "observed_ms": [round(v, 3) for v in observed],
    }


def _pooled(samples: list[Sample], key: str = "latencies_ms") -> dict[str, float]:
    values = [v for s in samples for v in s[key]]
    return {
        "p50_ms": round(percentile(values, 50), 3),
        "p90_ms": round(percentile(values, 90), 3),
        "p99_ms": round(percentile(values, 99), 3),
        "max_ms": round(max(values), 3),
        "n": len(values),
    }


def latency(ctx: Context) -> dict[str, Any]:
    stack, sizes = ctx.noop(), ctx.sizes
    samples = alternate(
        [stack.fleetline, stack.dark, stack.bare],
        sizes.reps,
        lambda side, _: _latency_run(side, stack.shape, sizes.latency_jobs),
        warmup=lambda side: _latency_run(side, stack.shape, 10),
        retries=sizes.noisy_retries,
    )
    f = _pooled(samples["fleetline"])
    d = _pooled(samples["fleetline_dark"])
    b = _pooled(samples["bare_celery"])
    f["observed_p50_ms"] = _pooled(samples["fleetline"], "observed_ms")["p50_ms"]
    b["observed_p50_ms"] = _pooled(samples["bare_celery"], "observed_ms")["p50_ms"]
    p50_ok = f["p50_ms"] <= b["p50_ms"] + 2
    p99_ok = f["p99_ms"] <= 1.3 * b["p99_ms"]
    fl, bare = samples["fleetline"], samples["bare_celery"]
    added = spread([x["p50_ms"] - y["p50_ms"] for x, y in zip(fl, bare, strict=False)])
    p99 = pairwise(fl, bare, "p99_ms")
    return result(
        fleetline=f,
        baseline=b,
        ratio={
            "p50": ratio(f["p50_ms"], b["p50_ms"]),
            "p99": ratio(f["p99_ms"], b["p99_ms"]),
            "p50_ms_added_pairwise": added,
            "p99_pairwise": p99,
        },
        target="p50 <= bare + 2 ms and p99 <= 1.3x bare",
        target_met=p50_ok and p99_ok,
        headline={
            "fleetline": f"p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms",
            "baseline": f"p50 {b['p50_ms']:.1f} ms, p99 {b['p99_ms']:.1f} ms",
            "ratio": f"p50 {f['p50_ms'] - b['p50_ms']:+.1f} ms (per rep {added['min']:+.1f} to "
            f"{added['max']:+.1f}), p99 {ratio_text(p99)}",
        },
        samples=samples,
        notes=[
            SHAPE_NOTE.format(docs=stack.shape.docs, n=stack.shape.subtasks),
            "Latency = the worker's completion timestamp (Fleetline: the job's finished_at; "
            "bare: the time the callback wrote) minus the time submit() was called; "
            "`observed_*` is when the caller's 0.5 ms poll saw it. One job at a time.",
        ],
        target_detail={"p50_ok": p50_ok, "p99_ok": p99_ok},
        tracing_and_metrics_off=d,
        observability_cost={
            "p50_ms_added": round(f["p50_ms"] - d["p50_ms"], 3),
            "p99_ms_added": round(f["p99_ms"] - d["p99_ms"], 3),
        },
    )


def _one_job(shape: Shape, side: Any, _: int) -> Sample:
    return run_burst(side, shape, 1, poll_s=0.05).sample()


def _warm_one(shape: Shape, side: Any) -> None:
    run_burst(side, shape, 1)


def fanout(ctx: Context) -> dict[str, Any]:
    stack, sizes = ctx.noop(), ctx.sizes
    settings = stack.fleetline.settings
    assert settings is not None
    shapes = {
        label: shape_of(settings, docs_for(settings, n))
        for label, n in (("small", sizes.fanout_small), ("large", sizes.fanout_large))
    }
    samples: dict[str, dict[str, list[Sample]]] = {}
    for label, shape in shapes.items():
        reps = sizes.reps if label == "small" else sizes.fanout_large_reps
        log.info(" fan-out %s: %d subtasks (%d documents)", label, shape.subtasks, shape.docs)
        samples[label] = alternate(
            [stack.fleetline, stack.bare],
            reps,
            functools.partial(_one_job, shape),
            warmup=functools.partial(_warm_one, shape) if label == "small" else None,
            retries=sizes.noisy_retries,
        )
    f = {k: med(v["fleetline"], "wall_s", 3) or 0.0 for k, v in samples.items()}
    b = {k: med(v["bare_celery"], "wall_s", 3) or 0.0 for k, v in samples.items()}
    fa = {k: med(v["fleetline"], "after_submit_s", 3) or 0.0 for k, v in samples.items()}
    ba = {k: med(v["bare_celery"], "after_submit_s", 3) or 0.0 for k, v in samples.items()}
    f_scale, b_scale = ratio(f["large"], f["small"]), ratio(b["large"], b["small"])
    after = {
        k: pairwise(v["fleetline"], v["bare_celery"], "after_submit_s") for k, v in samples.items()
    }
    counts = {k: s.subtasks for k, s in shapes.items()}
    return result(
        fleetline={
            "wall_s": f,
            "scale_large_over_small": round(f_scale, 3),
            "after_submit_s": fa,
        },
        baseline={
            "wall_s": b,
            "scale_large_over_small": round(b_scale, 3),
            "after_submit_s": ba,
        },
        ratio={
            "small": ratio(f["small"], b["small"]),
            "large": ratio(f["large"], b["large"]),
            "after_submit_pairwise": after,
        },
        target=f"time({counts['large']}) / time({counts['small']}) <= 11 for Fleetline",
        target_met=f_scale <= 11,
        headline={
            "fleetline": f"{f['small']:.2f} s / {f['large']:.2f} s (x{f_scale:.1f}); after the "
            f"last submit {fa['small']:.2f} s / {fa['large']:.2f} s",
            "baseline": f"{b['small']:.2f} s / {b['large']:.2f} s (x{b_scale:.1f}); after the "
            f"last submit {ba['small']:.2f} s / {ba['large']:.2f} s",
            "ratio": f"{f['small'] / b['small']:.2f}x / {f['large'] / b['large']:.2f}x; after "
            f"the last submit {ratio_text(after['small'])} / {ratio_text(after['large'])}",
        },
        samples={f"{label}:{side}": v for label, d in samples.items() for side, v in d.items()},
        notes=[
            "One job per run; wall time from submit() to the job's completion timestamp, "
            "polling the state store or the callback's mark (never AsyncResult.get()). "
            "Publishing the steps takes most of a large job's wall time on both sides; "
            "`after_submit_s` is the workers' share: from submit() returning to the job's "
            "completion.",
            f"Subtasks: small {counts['small']}, large {counts['large']} (research_brief of "
            f"{shapes['small'].docs} and {shapes['large'].docs} documents; the bare chord "
            "has the same headers on the same queues).",
        ],
        subtasks=counts,
    )
