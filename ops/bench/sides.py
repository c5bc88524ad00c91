"""The contestants behind one small interface; Fleetline here, the baselines in sides_bare.

A side starts its worker processes on a database of its own, submits jobs of a given
shape, and says how many of the current run's jobs are done and when each finished.
"""

from __future__ import annotations

import contextlib
import itertools
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from celery import Celery

from fleetline.producer.submit import Producer
from fleetline.producer.supervisor import Supervisor, beat_command, worker_command
from fleetline.shared import keys
from fleetline.shared.schemas import JobStatus
from fleetline.shared.settings import FleetlineSettings
from ops.bench.cpu import paused
from ops.bench.harness import (
    ACTIVE,
    Bench,
    child_env,
    pin_fleet,
    settings_for,
    start_process,
    stop_processes,
    wait_until,
)
from ops.bench.jobs import Shape, brief_spec

TERMINAL = {s.value.encode() for s in JobStatus if s.terminal}


def celery_argv(
    settings: FleetlineSettings, app: str, name: str, queues: list[str], pool: str, conc: int
) -> list[str]:
    """Fleetline's worker command line with another app, name, queues, pool or concurrency.

    Built from `worker_command` so that both Celery sides always run with the same flags;
    `queues` replace all of Fleetline's (its agents' and the housekeeping queue).
    """
    argv = worker_command(settings, [next(iter(settings.fleet.worker_types))])
    swap = {"-A": app, "-n": f"{name}@%h", "-Q": ",".join(queues), "-P": pool, "-c": str(conc)}
    return [swap.get(argv[i - 1], arg) if i else arg for i, arg in enumerate(argv)]


def wait_pings(app: Celery, count: int, timeout_s: float = 90.0) -> None:
    def answered() -> bool:
        return len(app.control.ping(timeout=0.5) or []) >= count

    wait_until(answered, timeout_s, f"{count} workers to answer ping", poll_s=0.1)


@dataclass
class Side:
    """What every side has: a name, a database, its processes and the current run.

    `polls` counts the benchmark's own round trips and commands (its completion polls), so
    that Redis cost figures can leave them out.
    """

    bench: Bench
    name: str
    env: dict[str, str] = field(default_factory=dict)
    db: int = 0
    procs: list[Any] = field(default_factory=list)
    run_id: str = ""
    polls: list[int] = field(default_factory=lambda: [0, 0])

    def launch(self) -> None:
        raise NotImplementedError

    def ready(self) -> None:
        """Block until the workers answer (Celery ping), or until a first job is done."""

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def pausable(self) -> list[int]:
        """The processes paused while another side is measured: all of them."""
        return self.pids()

    def hold(self) -> contextlib.AbstractContextManager[None]:
        """A context in which this side's workers take nothing from their queues."""
        return paused(self.pausable())

    def stop(self) -> None:
        stop_processes(self.procs)

    def begin(self) -> None:
        """Start a new run: its counters and marks are its own."""
        self.run_id = uuid.uuid4().hex[:8]

    def end(self) -> None:
        """Drop the run's completion marks (the benchmark's keys, not the side's)."""
        self._count(1, 1)
        self.bench.client(self.db).delete(self.counter_key, self.times_key)

    def submit(self, shape: Shape) -> str:
        raise NotImplementedError

    def _count(self, round_trips: int, commands: int) -> None:
        self.polls[0] += round_trips
        self.polls[1] += commands

    @property
    def counter_key(self) -> str:
        return f"bench:{self.run_id}:count"

    @property
    def times_key(self) -> str:
        return f"bench:{self.run_id}:done"

    def progress(self) -> int:
        self._count(1, 1)
        return int(self.bench.client(self.db).get(self.counter_key) or 0)

    def finish_times(self) -> list[float]:
        self._count(1, 1)
        return [float(v) for v in self.bench.client(self.db).hvals(self.times_key)]

    def finished_at(self, handle: str) -> float | None:
        self._count(1, 1)
        raw = self.bench.client(self.db).hget(self.times_key, handle)
        return float(raw) if raw else None


def start_all(sides: list[Any]) -> None:
    """Launch every side's processes at once, wait until each is ready, and make them
    active (paused while another side is measured)."""
    try:
        for side in sides:
            side.launch()
        for side in sides:
            side.ready()
        # Started on every CPU (a dozen imports at once), then every thread and child of
        # every side moved to the fleet's CPUs, away from the producer's.
        for side in sides:
            pin_fleet(side.pids())
    except BaseException:
        stop_all(sides)
        raise
    ACTIVE.extend(sides)


def stop_all(sides: list[Any]) -> None:
    """Stop every side at once (warm shutdowns take a second or two each)."""
    ACTIVE[:] = [s for s in ACTIVE if s not in sides]
    with ThreadPoolExecutor(max_workers=max(1, len(sides))) as pool:
        for future in [pool.submit(side.stop) for side in sides]:
            future.result()


@dataclass
class FleetlineSide(Side):
    """Fleetline as shipped: `Supervisor` workers (one per agent, or one for all) and beat.

    Every worker also consumes the housekeeping queue (deadline reaper, kill switches), as
    `worker_command` makes it.
    """

    single: bool = False
    with_beat: bool = True
    settings: FleetlineSettings | None = None
    producer: Producer | None = None
    fleet: Supervisor = field(default_factory=Supervisor)
    # Unfinished jobs of the run, oldest first; finish times of the finished ones.
    _open: dict[str, None] = field(default_factory=dict)
    _done: list[float] = field(default_factory=list)
    _polls: int = 0

    def launch(self) -> None:
        self.db = self.bench.new_db()
        env = child_env(
            {
                "FLEETLINE_REDIS_URL": self.bench.url(self.db),
                "FLEETLINE_LOG_LEVEL": "WARNING",
                **self.env,
            }
        )
        settings = self.settings = settings_for(env)
        logs = self.bench.log_dir(f"{self.name}-{self.db}")
        if self.single:
            # One process for every agent's queue and housekeeping (their pools agree:
            # `fleet_env` gives every worker type the same one).
            argv = worker_command(
                settings, list(settings.fleet.worker_types), node=f"{self.name}-all"
            )
            self.fleet.processes["all"] = start_process(argv, env, logs / "all.log")
            if self.with_beat:
                self.fleet.processes["beat"] = start_process(
                    beat_command(settings), env, logs / "beat.log"
                )
        else:
            self.fleet.start(settings, env, None, self.with_beat, log_dir=str(logs))
        self.procs = list(self.fleet.processes.values())
        self.producer = Producer.from_settings(settings)

    def ready(self) -> None:
        assert self.producer is not None and self.settings is not None
        workers = 1 if self.single else len(self.settings.fleet.worker_types)
        wait_pings(self.producer.app, workers)

    def pausable(self) -> list[int]:
        """Its workers; beat runs on (RedBeat's 30 s lock would expire in a long pause, and
        what it sends waits in this side's queues for its own samples)."""
        beat = self.fleet.processes.get("beat")
        return [pid for pid in self.pids() if beat is None or pid != beat.pid]

    def stop(self) -> None:
        self.fleet.stop()
        if self.producer is not None:
            self.producer.app.close()

    def begin(self) -> None:
        super().begin()
        self._open.clear()
        self._done = []

    def end(self) -> None:
        return None

    def submit(self, shape: Shape) -> str:
        assert self.producer is not None
        job_id = self.producer.submit(brief_spec(shape.docs, shape.deadline_s)).job_id
        self._open[job_id] = None
        return job_id

    def _check(self, job_ids: list[str]) -> list[tuple[str, float | None]]:
        self._count(1, len(job_ids))
        pipe = self.bench.client(self.db).pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(keys.job(job_id), "status", "finished_at")
        return [
            (job_id, float(fin) if status in TERMINAL and fin else None)
            for job_id, (status, fin) in zip(job_ids, pipe.execute(), strict=True)
        ]

    def progress(self) -> int:
        # Jobs finish roughly in submission order: look at the oldest open ones each time,
        # and at every open one now and then, so that none finishes unseen and expires.
        self._polls += 1
        if self._polls % 10 == 0:
            self._settle(list(self._open))
        while self._open:
            head = list(itertools.islice(self._open, 32))
            if self._settle(head) < len(head):
                break
        return len(self._done)

    def _settle(self, job_ids: list[str]) -> int:
        """Move the finished ones of `job_ids` from open to done; return how many."""
        finished = 0
        for start in range(0, len(job_ids), 500):
            for job_id, t in self._check(job_ids[start : start + 500]):
                if t is not None:
                    del self._open[job_id]
                    self._done.append(t)
                    finished += 1
        return finished

    def finish_times(self) -> list[float]:
        return list(self._done)

    def finished_at(self, handle: str) -> float | None:
        return self._check([handle])[0][1]
