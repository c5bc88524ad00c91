"""Jobs of a benchmark: their shape, and submitting bursts of them or one at a time.

A Fleetline job is a research_brief of the example fleet; the baselines copy its subtasks'
queues and send their callback to the queue of its then-step, so both sides move the same
messages through the same queues. Completion times come from the
workers' own clock, so poll intervals never blur a figure.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fleetline.shared.settings import FleetlineSettings

KIND = "research_brief"

# Far enough that no queue backlog of a benchmark ever reaches it (the limit is 1800 s).
DEADLINE_S = 1500.0
QUESTION = "What changed this quarter, and why?"
# How often a burst reads progress while it is still submitting.
POLL_WHILE_SUBMITTING_S = 0.25

_serial = itertools.count()
_RUN = uuid.uuid4().hex[:6]


def brief_spec(docs: int, deadline_s: float = DEADLINE_S) -> dict[str, Any]:
    """A research_brief job of `docs` one-word documents: 2 x docs + ceil(docs/4) subtasks.

    Every job's documents are new words, so the result cache never answers for the model:
    a benchmark of identical jobs would otherwise measure cache hits.
    """
    word = f"w{_RUN}{next(_serial)}"
    return {
        "kind": KIND,
        "tenant": "bench",
        "deadline_s": deadline_s,
        "input": {
            "question": QUESTION,
            "documents": [{"id": f"d{i}", "text": f"{word}x{i}"} for i in range(docs)],
        },
    }


@dataclass(frozen=True)
class Shape:
    """A job: how many documents Fleetline gets, the queue of each subtask it makes, and
    the queue its callback (Fleetline's fan-in, the bare chord body) goes to."""

    docs: int
    queues: tuple[str, ...]
    then: str = "default"
    deadline_s: float = DEADLINE_S  # Fleetline's jobs only

    @property
    def subtasks(self) -> int:
        return len(self.queues)


def shape_of(settings: FleetlineSettings, docs: int) -> Shape:
    """The steps the fleet's research_brief plan makes of `docs` documents (the parallel
    ones, and the then-step the fan-in runs on); the baselines copy them."""
    plan = settings.fleet.plan(KIND, brief_spec(docs)["input"])
    if plan.then is None:
        raise ValueError(f"{KIND}: the plan has no then-step to fan in on")
    return Shape(docs, tuple(s.worker_type for s in plan.steps), plan.then.worker_type)


def shape_of_plain(subtasks: int) -> Shape:
    """A shape for sides that do not care about queues (Dramatiq's single queue)."""
    return Shape(0, ("default",) * subtasks)


def docs_for(settings: FleetlineSettings, subtasks: int) -> int:
    """The document count whose plan comes closest to `subtasks` subtasks."""
    best = max(1, round(subtasks / 2.25))
    return min(
        range(max(1, best - 3), best + 4),
        key=lambda d: abs(shape_of(settings, d).subtasks - subtasks),
    )


@dataclass
class RunResult:
    """One burst of jobs: when it started, when its last job finished, what submit cost.

    `started` is when the first submit began, or, for a burst submitted while the workers
    were held (`pre_enqueued`), when they were let go; `submitted` is when the last submit
    returned.
    """

    jobs: int
    subtasks: int
    started: float
    finished: float
    seen: float
    submit_s: float
    job_ids: list[str]
    submitted: float = 0.0
    pre_enqueued: bool = False

    @property
    def wall_s(self) -> float:
        return self.finished - self.started

    @property
    def after_submit_s(self) -> float:
        """From the last submit's return to the last job's completion: the workers' share."""
        return self.finished - max(self.submitted, self.started)

    def sample(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "subtasks": self.subtasks,
            # Every subtask and each job's callback (Fleetline's fan-in, the chord body).
            "steps": self.subtasks + self.jobs,
            "wall_s": round(self.wall_s, 4),
            "after_submit_s": round(self.after_submit_s, 4),
            "jobs_per_s": round(self.jobs / self.wall_s, 2),
            "subtasks_per_s": round(self.subtasks / self.wall_s, 1),
            "submit_ms_per_job": round(self.submit_s / self.jobs * 1000, 3),
            "pre_enqueued": self.pre_enqueued,
        }


def run_burst(
    side: Any,
    shape: Shape,
    jobs: int,
    *,
    window: int | None = None,
    poll_s: float = 0.02,
    stall_s: float = 180.0,
    tick: Any = None,
    pre_enqueue: bool = False,
) -> RunResult:
    """Submit `jobs` jobs (at most `window` unfinished at once) and wait for all of them.

    Progress is read while submitting too: a finished job's record may expire (the
    benchmark's TTLs are short) before a long submit loop ends. With `pre_enqueue` every
    job is submitted while the side's workers are held (`side.hold()`), and the clock
    starts when they are let go: the figure is the workers', not the producer's. Raises
    TimeoutError when no job finishes for `stall_s`.
    """
    if pre_enqueue and window is not None:
        raise ValueError("a pre-enqueued burst has no window: its workers wait for all of it")
    side.begin()
    ids: list[str] = []
    submit_s = 0.0
    started = time.time()
    last_poll = time.monotonic()
    done, moved = 0, time.monotonic()
    with side.hold() if pre_enqueue else contextlib.nullcontext():
        for _ in range(jobs):
            if tick:
                tick()
            if time.monotonic() - last_poll > POLL_WHILE_SUBMITTING_S:
                side.progress()
                last_poll = time.monotonic()
            while window is not None and len(ids) - side.progress() >= window:
                if tick:
                    tick()
                time.sleep(poll_s / 4)
            t = time.perf_counter()
            ids.append(side.submit(shape))
            submit_s += time.perf_counter() - t
        submitted = time.time()
        if pre_enqueue:
            started = submitted
    moved = time.monotonic()
    while (now_done := side.progress()) < jobs:
        if now_done != done:
            done, moved = now_done, time.monotonic()
        elif time.monotonic() - moved > stall_s:
            raise TimeoutError(f"{side.name}: {done}/{jobs} jobs done, none for {stall_s:g} s")
        if tick:
            tick()
        time.sleep(poll_s)
    seen = time.time()
    times = side.finish_times()
    side.end()
    return RunResult(
        jobs,
        jobs * shape.subtasks,
        started,
        max(times),
        seen,
        submit_s,
        ids,
        submitted=submitted,
        pre_enqueued=pre_enqueue,
    )


def run_one(side: Any, shape: Shape, poll_s: float = 0.0005) -> tuple[float, float]:
    """One job on its own: (latency by the worker's clock, latency the caller saw), seconds."""
    side.begin()
    started = time.time()
    handle = side.submit(shape)
    while True:
        finished = side.finished_at(handle)
        if finished is not None:
            seen = time.time()
            side.end()
            return finished - started, seen - started
        if time.time() - started > 60:
            raise TimeoutError(f"{side.name}: job {handle} not done in 60 s")
        time.sleep(poll_s)
