"""The benchmark's own Redis server, worker environments, processes and A/B alternation.

The benchmark never touches a Redis it did not start: it runs a private, memory-only
redis-server on a free port and gives every side of every scenario a database of its own.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil  # type: ignore[import-untyped, unused-ignore]  # no types-psutil in the venv
import redis

from fleetline.shared.embedded_redis import EmbeddedRedis, start_redis
from fleetline.shared.settings import FleetlineSettings, load_settings
from ops.bench import cpu

log = logging.getLogger("ops.bench")

ROOT = Path(__file__).resolve().parents[2]
DATABASES = 128
# The benchmark's redis-server: its CPU is reported per sample, not counted as foreign.
REDIS_PIDS: list[int] = []
# The sides whose processes are up (`sides.start_all` adds them): every one but the side
# being measured is paused during a sample.
ACTIVE: list[Runner] = []
# Where the producer and the fleet run (None: anywhere); set once by Bench.start.
AFFINITY: list[cpu.Affinity] = []
# Environment prefixes a run sets itself; inherited values would skew a side.
_OWNED_PREFIXES = ("FLEETLINE_", "BENCH_")


@dataclass
class Bench:
    """One benchmark run: its Redis server, its database counter and its log folder."""

    quick: bool
    workdir: Path
    server: EmbeddedRedis
    _dbs: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _clients: dict[int, redis.Redis] = field(default_factory=dict)

    @classmethod
    def start(cls, quick: bool, workdir: Path, pin: bool = True) -> Bench:
        """Start the Redis server; with `pin`, keep this process (the producer) on one CPU
        and Redis and every worker started later on the others."""
        workdir.mkdir(parents=True, exist_ok=True)
        affinity = cpu.plan_affinity(pin)
        if affinity is not None:
            AFFINITY[:] = [affinity]
            os.sched_setaffinity(0, affinity.producer)
        server = start_redis(workdir / "redis", databases=DATABASES)
        REDIS_PIDS.append(server.process.pid)
        pin_fleet([server.process.pid])
        log.info("private redis-server on port %d", server.port)
        return cls(quick, workdir, server)

    def stop(self) -> None:
        for client in self._clients.values():
            client.close()
        self.server.stop()

    def new_db(self) -> int:
        db = next(self._dbs)
        if db >= DATABASES:
            raise RuntimeError("out of Redis databases")
        return db

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.server.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        """The benchmark's own client of a database (one connection: polls are counted)."""
        if db not in self._clients:
            self._clients[db] = redis.Redis(port=self.server.port, db=db, socket_timeout=60)
        return self._clients[db]

    def log_dir(self, name: str) -> Path:
        path = self.workdir / "logs" / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a worker process: ours, minus inherited Fleetline settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWNED_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@contextlib.contextmanager
def patched_environ(env: Mapping[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def settings_for(env: Mapping[str, str]) -> FleetlineSettings:
    """Fleetline's settings exactly as a worker started with `env` reads them."""
    with patched_environ(env):
        return load_settings()


def pin_fleet(pids: Sequence[int]) -> None:
    """Put these processes (and their threads and children) on the fleet's CPUs."""
    if AFFINITY:
        cpu.pin(pids, AFFINITY[0].fleet)


def start_process(
    command: Sequence[str], env: Mapping[str, str], log_file: Path
) -> subprocess.Popen[bytes]:
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            list(command), env=dict(env), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )


def stop_processes(processes: Sequence[subprocess.Popen[bytes]], timeout_s: float = 10.0) -> None:
    """SIGTERM (warm shutdown), then SIGKILL whatever is left; only our own children."""
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in processes:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(p.pid).children(recursive=True):
                    child.kill()
            p.kill()
            p.wait()


def _tree(pids: Sequence[int]) -> list[psutil.Process]:
    procs: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
    return procs


def tree_rss_mb(pids: Sequence[int]) -> dict[int, float]:
    """Resident memory (MiB) of every process of these trees, by pid."""
    out: dict[int, float] = {}
    for proc in _tree(pids):
        with contextlib.suppress(psutil.Error):
            out[proc.pid] = proc.memory_info().rss / 2**20
    return out


class Runner(Protocol):
    name: str

    def pids(self) -> list[int]: ...

    def pausable(self) -> list[int]:
        """The processes that may be paused while another side is measured."""
        ...


Sample = dict[str, Any]


# A sample during which other processes on the machine used more than this share of a
# core (plus a little) measured them as much as us: it is re-run when retries are allowed.
NOISY_CORE_SHARE = 0.3


def _measured(side: Runner, others: list[Runner], run: Callable[[], Sample]) -> Sample:
    """Run one sample, the other sides paused, and add where the machine's CPU went."""
    groups = {
        "worker": side.pids(),
        cpu.OURS: [p for s in others for p in s.pids()],
        "redis": REDIS_PIDS,
    }
    with cpu.paused([p for s in others for p in s.pausable()]):
        start, t0 = cpu.snapshot(groups), time.monotonic()
        sample = run()
        elapsed = time.monotonic() - t0
        used = cpu.snapshot(groups).minus(start)
    # CPU of everything but this benchmark's processes and its Redis (other people's test
    # runs, and steal): a sample with a lot of it is a noisy one. No more than the CPUs
    # had left over (a process read at only one end can look older than the sample).
    ours = sum(used.get(g, 0.0) for g in (*groups, cpu.PRODUCER))
    foreign = min(used.get(cpu.FOREIGN, 0.0), max(0.0, (os.cpu_count() or 1) * elapsed - ours))
    sample.update(
        elapsed_s=round(elapsed, 3),
        worker_cpu_s=round(used.get("worker", 0.0), 3),
        # The paused sides and any other process of this benchmark (cpu.OURS).
        idle_cpu_s=round(used.get(cpu.OURS, 0.0), 3),
        producer_cpu_s=round(used.get(cpu.PRODUCER, 0.0), 3),
        redis_cpu_s=round(used.get("redis", 0.0), 3),
        foreign_cpu_s=round(foreign, 3),
        # The machine's own count (/proc/stat) minus ours: a cross-check of `foreign`.
        machine_cpu_s=round(used.get("machine", 0.0), 3),
        foreign_by_machine_cpu_s=round(used.get("machine", 0.0) - ours, 3),
        noisy=foreign > NOISY_CORE_SHARE * elapsed + 0.2,
    )
    return sample


def rotated(sides: Sequence[Runner], rep: int) -> list[Runner]:
    """The sides in the order of repetition `rep`: A B C, then B C A, then C A B."""
    k = rep % len(sides) if sides else 0
    return [*sides[k:], *sides[:k]]


def alternate(
    sides: Sequence[Runner],
    reps: int,
    run: Callable[[Runner, int], Sample],
    warmup: Callable[[Runner], object] | None = None,
    retries: int = 0,
) -> dict[str, list[Sample]]:
    """Warm every side up, then run them in turn, `reps` times each, the order rotating
    from one repetition to the next (A B C, B C A, C A B, ...).

    While a side is measured every other active side is paused (its workers; beat runs
    on: RedBeat's lock would expire). Each sample gets the CPU seconds its side's
    processes used (`worker_cpu_s`), what the paused sides used (`idle_cpu_s`), the
    producer's (`producer_cpu_s`), Redis's, and everything else on the machine, steal
    included (`foreign_cpu_s`), each counted per process group. A repetition in which any
    side was noisy is run again, up to `retries` times per call; its samples are kept
    under `<side>~rejected`. Each sample records its place in the repetition (`order`).
    """
    if warmup is not None:
        for side in sides:
            with cpu.paused([p for s in _bystanders(side) for p in s.pausable()]):
                warmup(side)
    samples: dict[str, list[Sample]] = {side.name: [] for side in sides}
    rep = attempt = 0
    while rep < reps:
        batch: dict[str, Sample] = {}
        for place, side in enumerate(rotated(sides, attempt)):
            sample = _measured(side, _bystanders(side), functools.partial(run, side, rep))
            sample["order"] = place
            batch[side.name] = sample
            log.info("  rep %d %-14s %s", rep, side.name, _brief(sample))
        attempt += 1
        noisy = any(s["noisy"] for s in batch.values())
        if noisy and retries > 0:
            retries -= 1
            log.info("  rep %d was noisy (other processes took the CPU): running it again", rep)
            for name, sample in batch.items():
                samples.setdefault(f"{name}~rejected", []).append(sample)
            continue
        for name, sample in batch.items():
            samples[name].append(sample)
        rep += 1
    return samples


def _bystanders(side: Runner) -> list[Runner]:
    return [s for s in ACTIVE if s is not side]


def _brief(sample: Sample) -> str:
    keys = [k for k in sample if not isinstance(sample[k], list | dict)][:6]
    return " ".join(
        f"{k}={sample[k]:.4g}" if isinstance(sample[k], float) else f"{k}={sample[k]}" for k in keys
    )


def wait_until(
    check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(poll_s)
