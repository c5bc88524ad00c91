"""I/O-bound concurrency: model calls that each wait, in one worker container of 2 cores.

Both Celery sides run the same container: PROCESSES worker processes (one per core; a
threads pool runs its Python on one core), each a threads pool of the same concurrency,
consuming every queue: Fleetline as `fleetline worker --processes N`, bare Celery as N
plain `celery worker` processes. Bare Celery's default, prefork with one child per core,
shows what the pool alone is worth. Calls in flight are counted the same way for every
side, from each call's start and end (`calls_in_flight`). Threads enforce no Celery time
limit, so two probes check the limits that do: the per-call timeout cuts a stalled call,
and the watchdog (workers/runaway.py) records a call that ignores its timeout `timed_out`
and recycles its process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]  # no types-psutil in the venv
from pydantic import BaseModel, Field

from fleetline import Fleet, Plan, fan_out
from fleetline.producer.submit import Producer
from fleetline.shared import keys, otel
from fleetline.shared.trace_store import decode
from ops.bench.context import Context, fleet_env
from ops.bench.harness import (
    Sample,
    alternate,
    child_env,
    settings_for,
    start_process,
    wait_until,
)
from ops.bench.jobs import Shape, run_burst, shape_of
from ops.bench.scenario import med, result
from ops.bench.sides import FleetlineSide, start_all, stop_all, wait_pings
from ops.bench.sides_bare import BareCelerySide, check_bare_queues
from ops.bench.stats import median, ratio

log = logging.getLogger("ops.bench")

SIDES = ("fleetline", "bare_prefork", "bare_threads")
# Worker processes of the container: one per core of a 2-core container.
PROCESSES = 2
PROBE_JOBS = 20
PROBE_MAX_CALL_S = 1.0
# Cut at max_call_s means well under the 60 s stall; a busy 2-core box wakes a thread late.
PROBE_SLACK_S = 1.0
# The runaway probe: a call that sleeps past a 2 s hard time limit, ignoring its timeout.
RUNAWAY_APP = "ops.bench.scenarios_io:runaway_fleet"
RUNAWAY_TIME_LIMIT_S = 2.0
# The watchdog looks every 0.25 s and gives the step's own path 1 s past the hard limit.
RUNAWAY_GRACE_S = 1.25
TARGET_IN_FLIGHT = 200
ROUNDS = 5


class _Note(BaseModel):
    text: str = Field(min_length=1)


class _Docs(BaseModel):
    texts: list[str]


def _runaway_answer(instruction: str, document: str) -> dict[str, Any]:
    if document.startswith("stuck"):
        time.sleep(3600)  # in C: no timeout and no exception raised into the thread cuts it
    return {"text": document or "summary"}


# The runaway probe's fleet: a reader whose sim answer never comes for a "stuck" document.
runaway_fleet = Fleet("runaway")
_reader = runaway_fleet.agent(
    "reader", tier="cheap", output=_Note, prompt="Read.", sim=_runaway_answer
)
_summary = runaway_fleet.agent(
    "summary", tier="cheap", output=_Note, prompt="Sum up.", sim=_runaway_answer
)


@runaway_fleet.job("read_all", input=_Docs)
def _read_all(docs: _Docs) -> Plan:
    steps = [_reader.step(id=f"r{i}", text=text) for i, text in enumerate(docs.texts)]
    return fan_out(steps, then=_summary.step(id="summary"))


def _whole_container(pids: Iterable[int]) -> None:
    """Let these processes (every thread, every child) use every CPU: the container's two
    cores, not the one the harness pins a fleet to."""
    cpus = set(range(os.cpu_count() or 1))
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                for thread in proc.threads():
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(thread.id, cpus)


@dataclass
class FleetlineProcesses(FleetlineSide):
    """Fleetline as a container runs it: `fleetline worker --processes N` for every queue."""

    processes: int = PROCESSES

    def launch(self) -> None:
        self.db = self.bench.new_db()
        env = child_env(
            {
                "FLEETLINE_REDIS_URL": self.bench.url(self.db),
                "FLEETLINE_LOG_LEVEL": "WARNING",
                **self.env,
            }
        )
        self.settings = settings_for(env)
        logs = self.bench.log_dir(f"{self.name}-{self.db}")
        argv = [sys.executable, "-m", "fleetline.producer.cli", "worker"]
        argv += ["--processes", str(self.processes)]
        self.fleet.processes["all"] = start_process(argv, env, logs / "worker.log")
        self.procs = list(self.fleet.processes.values())
        self.producer = Producer.from_settings(self.settings)

    def ready(self) -> None:
        assert self.producer is not None
        wait_pings(self.producer.app, self.processes)


@dataclass
class BareProcesses(BareCelerySide):
    """Bare Celery in the same container: N `celery worker` processes for every queue."""

    processes: int = PROCESSES

    def worker_groups(self) -> list[tuple[str, list[str]]]:
        from ops.bench.bare_celery import QUEUES

        return [(f"{self.name}-{i}", list(QUEUES)) for i in range(1, self.processes + 1)]


Call = tuple[float, float]


def calls_in_flight(calls: list[Call], start: float, end: float) -> dict[str, Any]:
    """Calls in flight over time, from each call's (start, end): the one definition every
    side is measured by. Calls that start within [start, end] count.

    `peak`: most at once; `busy_mean`/`busy_p50`: time-weighted over the span from the
    first call's start to the last call's end (no ramp-up before, no idle tail after);
    `achieved`: the calls' total time over the whole burst (ramp-up and tail included).
    """
    kept = [(t0, t1) for t0, t1 in calls if start <= t0 <= end]
    if not kept:
        return {"calls": 0, "peak": 0, "busy_mean": 0.0, "busy_p50": 0, "achieved": 0.0}
    events = sorted([(t0, 1) for t0, _ in kept] + [(t1, -1) for _, t1 in kept])
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
    total = sum(t1 - t0 for t0, t1 in kept)
    return {
        "calls": len(kept),
        "peak": peak,
        "busy_mean": round(mean, 1),
        "busy_p50": p50,
        "achieved": round(total / (end - start), 1) if end > start else 0.0,
        "median_call_ms": round(median([(t1 - t0) * 1000 for t0, t1 in kept]), 1),
    }


def logged_calls(log_path: Path) -> list[Call]:
    """(start, end) of each call of bare Celery's call log (`bare_celery.log_call`)."""
    if not log_path.exists():
        return []
    with open(log_path) as f:
        return [(d["t"], d["end"]) for d in map(json.loads, f) if "end" in d]


def traced_calls(side: FleetlineSide, job_ids: list[str]) -> list[Call]:
    """(start, end) of each model call of these jobs: their `chat` spans, which open when
    the provider's client is called and close when it returns (as bare's log does)."""
    pipe = side.bench.client(side.db).pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hgetall(keys.job_trace(job_id))
    calls = []
    for spans in pipe.execute():
        for span_id, value in spans.items():
            span = decode(span_id.decode(), value.decode())
            if span["attributes"].get(otel.OPERATION) == "chat":
                calls.append((span["start"], span["end"]))
    return calls


def _outcomes(side: FleetlineSide, job_ids: list[str]) -> list[dict[str, Any]]:
    pipe = side.bench.client(side.db).pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hvals(keys.job_outcomes(job_id))
    return [json.loads(raw) for values in pipe.execute() for raw in values]


def _sample(r: Any, flight: dict[str, Any]) -> Sample:
    return {
        **r.sample(),
        "model_calls": flight["calls"],
        "achieved_concurrency": flight["achieved"],
        "peak_in_flight": flight["peak"],
        "busy_mean_in_flight": flight["busy_mean"],
        "busy_p50_in_flight": flight["busy_p50"],
        "median_call_ms": flight.get("median_call_ms"),
    }


def _fleetline_run(side: FleetlineSide, shape: Shape, jobs: int) -> Sample:
    r = run_burst(side, shape, jobs, poll_s=0.05, pre_enqueue=True)
    outcomes = _outcomes(side, r.job_ids)
    flight = calls_in_flight(traced_calls(side, r.job_ids), r.started, r.finished)
    return {
        **_sample(r, flight),
        "outcomes_ok": sum(o["status"] == "ok" for o in outcomes),
        "outcomes": len(outcomes),
        "median_step_ms": round(median([o["latency_ms"] for o in outcomes]), 1),
    }


def _bare_run(side: BareCelerySide, shape: Shape, jobs: int, call_log: Path) -> Sample:
    r = run_burst(side, shape, jobs, poll_s=0.05, pre_enqueue=True)
    return _sample(r, calls_in_flight(logged_calls(call_log), r.started, r.finished))


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


def _children(side: FleetlineSide) -> set[int]:
    """The worker processes under a side's `fleetline worker --processes N` parent."""
    found: set[int] = set()
    for pid in side.pids():
        with contextlib.suppress(psutil.Error):
            found |= {c.pid for c in psutil.Process(pid).children()}
    return found


def _runaway_probe(side: FleetlineProcesses) -> dict[str, Any]:
    """A call that ignores its timeout on a threads pool: the watchdog must record it
    timed_out within the hard time limit (+ its grace + slack), the job must end, and the
    process must come back."""
    assert side.producer is not None
    producer = side.producer
    before = _children(side)
    spec = {"kind": "read_all", "deadline_s": 60, "input": {"texts": ["stuck", "fine"]}}
    job_id = producer.submit(spec).job_id
    t0 = time.monotonic()
    while not producer.store.get(job_id).status.terminal and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    job = producer.store.get(job_id)
    stuck = producer.store.outcomes(job_id).get("r0")
    ms = stuck.latency_ms if stuck is not None else None
    message = stuck.error.message if stuck is not None and stuck.error is not None else ""
    # The recycled process was replaced by a new one, and all N answer again.
    back = True
    try:
        wait_until(lambda: bool(_children(side) - before), 30, "a fresh worker process")
        wait_pings(producer.app, side.processes, timeout_s=30)
    except TimeoutError:
        back = False
    limit_ms = (RUNAWAY_TIME_LIMIT_S + RUNAWAY_GRACE_S + PROBE_SLACK_S) * 1000
    return {
        "job_status": job.status.value,
        "status": stuck.status.value if stuck is not None else None,
        "by_watchdog": "hard time limit" in message,
        "time_limit_s_setting": RUNAWAY_TIME_LIMIT_S,
        "call_ms": round(ms, 1) if ms is not None else None,
        "job_wall_s": round(time.monotonic() - t0, 2),
        "workers_back": back,
        "enforced": stuck is not None
        and stuck.status.value == "timed_out"
        and "hard time limit" in message
        and ms is not None
        and ms <= limit_ms
        and back,
    }


def _cpu_per_call(samples: list[Sample]) -> float | None:
    return med([{"v": s["worker_cpu_s"] / s["model_calls"] * 1000} for s in samples], "v", 2)


def io_concurrency(ctx: Context) -> dict[str, Any]:
    bench, sizes = ctx.bench, ctx.sizes
    # Each process a threads pool of io_concurrency (one process of it is CPU-bound long
    # before its threads are all busy).
    conc, cores = sizes.io_concurrency, os.cpu_count() or 2
    logs = {name: bench.workdir / f"calls-{name}.jsonl" for name in SIDES}
    env = fleet_env(sizes, pool="threads", concurrency=conc, latency_ms=sizes.io_latency_ms)
    fleetline = FleetlineProcesses(bench, "fleetline", env=env)
    prefork = BareCelerySide(
        bench,
        "bare_prefork",
        pool="prefork",
        concurrency=cores,
        single=True,
        sleep_ms=sizes.io_latency_ms,
        env={"BENCH_CALL_LOG": str(logs["bare_prefork"])},
    )
    threads = BareProcesses(
        bench,
        "bare_threads",
        pool="threads",
        concurrency=conc,
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
    runaway = FleetlineProcesses(
        bench,
        "fleetline_runaway",
        with_beat=False,
        env={
            "FLEETLINE_APP": RUNAWAY_APP,
            "FLEETLINE_CACHE_ENABLED": "false",
            "FLEETLINE_WORKERS__READER__MAX_CALL_S": "1",
            "FLEETLINE_WORKERS__READER__SOFT_TIME_LIMIT_S": "1",
            "FLEETLINE_WORKERS__READER__TIME_LIMIT_S": f"{RUNAWAY_TIME_LIMIT_S:g}",
            "FLEETLINE_WORKERS__READER__MAX_RETRIES": "0",
            "FLEETLINE_WORKERS__READER__FALLBACK_TIERS": "[]",
        },
    )
    sides: list[Any] = [fleetline, prefork, threads, probe, runaway]
    try:
        start_all(sides)
        _whole_container([pid for side in (fleetline, threads) for pid in side.pids()])
        assert fleetline.settings is not None
        shape = check_bare_queues(shape_of(fleetline.settings, sizes.io_docs))
        # At least ROUNDS rounds of the container's threads: a burst shorter than that is
        # mostly ramp-up and tail.
        subtasks = max(sizes.io_subtasks, ROUNDS * PROCESSES * conc)
        jobs = max(1, round(subtasks / shape.subtasks))
        prefork_jobs = max(1, round(sizes.io_prefork_subtasks / (shape.subtasks + 1)))

        def run(side: Any, _: int) -> Sample:
            if side is fleetline:
                return _fleetline_run(fleetline, shape, jobs)
            n = prefork_jobs if side is prefork else jobs
            return _bare_run(side, shape, n, logs[side.name])

        samples = alternate(
            [fleetline, prefork, threads],
            sizes.io_reps,
            run,
            # Prefork needs no warm-up for sleeping tasks, and one job of it takes 2.5 s.
            warmup=lambda side: None if side is prefork else run_burst(side, shape, 10),
            retries=sizes.noisy_retries,
        )
        probed = _probe(probe, shape_of(fleetline.settings, 4))
        ran_away = _runaway_probe(runaway)
    finally:
        stop_all(sides)
    keys_ = (
        "achieved_concurrency",
        "busy_mean_in_flight",
        "busy_p50_in_flight",
        "peak_in_flight",
        "median_call_ms",
        "jobs_per_s",
        "subtasks_per_s",
        "wall_s",
    )
    f = {k: med(samples["fleetline"], k, 2) for k in keys_}
    f["median_step_ms"] = med(samples["fleetline"], "median_step_ms", 1)
    f["worker_cpu_ms_per_call"] = _cpu_per_call(samples["fleetline"])
    p = {k: med(samples["bare_prefork"], k, 2) for k in keys_}
    t = {k: med(samples["bare_threads"], k, 2) for k in keys_}
    t["worker_cpu_ms_per_call"] = _cpu_per_call(samples["bare_threads"])
    busy = f["busy_mean_in_flight"] or 0.0
    bare_busy = t["busy_mean_in_flight"] or 0.0
    container = f"{PROCESSES} processes x threads -c {conc}"
    return result(
        fleetline={**f, "time_limit_probe": probed, "runaway_probe": ran_away},
        baseline=t,
        ratio={
            "in_flight_vs_bare_threads": ratio(busy, bare_busy),
            "in_flight_vs_prefork": ratio(busy, p["busy_mean_in_flight"] or 0),
        },
        target=f">= {TARGET_IN_FLIGHT} model calls in flight from one 2-core container "
        "(busy mean), time limits enforced",
        target_met=busy >= TARGET_IN_FLIGHT and probed["enforced"] and ran_away["enforced"],
        headline={
            "fleetline": f"{busy:.0f} in flight (peak {f['peak_in_flight']:.0f}), "
            f"{f['subtasks_per_s']} subtasks/s, {container}",
            "baseline": f"bare Celery {container}: {bare_busy:.0f} in flight "
            f"(peak {t['peak_in_flight']:.0f}); prefork -c {cores}: "
            f"{p['busy_mean_in_flight']}",
            "ratio": f"{ratio(busy, bare_busy):.2f}x bare threads, "
            f"{ratio(busy, p['busy_mean_in_flight'] or 0):.0f}x prefork",
        },
        samples=samples,
        notes=[
            f"Every model call waits {sizes.io_latency_ms:g} ms (sim latency; bare: "
            f"time.sleep). One 2-core container per side, its workers free to use both "
            f"cores: Fleetline `fleetline worker --processes {PROCESSES}` and bare Celery "
            f"{PROCESSES} worker processes, each a threads pool -c {conc} consuming every "
            f"queue. Each repetition runs {jobs} research_brief jobs of {shape.docs} "
            f"documents ({shape.subtasks} subtasks + the fan-in, all waiting), enqueued "
            f"while the side's workers are paused; bare prefork -c {cores} runs "
            f"{prefork_jobs} such jobs (it keeps 2 calls in flight).",
            "Calls in flight, one definition for every side: each call's start and end "
            "(Fleetline: the `chat` span of its trace, from entering the provider client "
            "to its return; bare: the task's call log, around its sleep). busy mean = "
            "time-weighted mean from the first call's start to the last call's end; "
            "achieved = the calls' total time / the burst's wall time (ramp-up and tail "
            "included); peak = most at once.",
            f"Time-limit probe: analysis calls stall for 60 s, max_call_s={PROBE_MAX_CALL_S:g}, "
            "no retries, threads pool (which enforces no Celery time limit): every stalled "
            f"call must end timed_out within max_call_s + {PROBE_SLACK_S:g} s.",
            "Runaway probe: a call that ignores its timeout (it sleeps for an hour in C) "
            f"under a {RUNAWAY_TIME_LIMIT_S:g} s hard time limit, on `fleetline worker "
            f"--processes {PROCESSES}`: the watchdog must record it timed_out within the "
            f"limit + {RUNAWAY_GRACE_S:g} s + {PROBE_SLACK_S:g} s, its job must end, and its "
            "recycled process must answer again.",
        ],
        bare_prefork=p,
    )
