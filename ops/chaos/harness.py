"""The chaos run's own Redis, a fleet of real worker processes per scenario, a stream of jobs.

The Redis is the run's own (append-only, fsync every second, as production runs it), so
it can be stopped, killed and restarted; each scenario gets a database and a fleet of its
own, on the sim provider with latency and injected errors, writing the sim's invoice.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]  # no types-psutil in the venv
import redis
from redis.exceptions import RedisError

from fleetline.producer.submit import Producer
from fleetline.producer.supervisor import Supervisor
from fleetline.shared.embedded_redis import EmbeddedRedis, free_port, start_redis
from fleetline.shared.errors import FleetlineError
from fleetline.shared.settings import FleetlineSettings
from ops.bench.harness import child_env, settings_for

log = logging.getLogger("ops.chaos")

DATABASES = 64
# Every run of the sim: some latency, and one call in ten failing (retried by the fleet).
SIM_ENV = {"FLEETLINE_SIM_LATENCY_MS": "40", "FLEETLINE_SIM_ERROR_RATE": "0.1"}
# The workers of the research brief, the one kind the scenarios stream: a fleet starts
# these unless a scenario names others (the example's other kinds' workers idle, and a
# random kill should hit the workers in use).
RESEARCH_BRIEF_WORKERS = ["extraction", "classification", "analysis", "synthesis"]


@dataclass
class ChaosRedis:
    """The run's redis-server, on a fixed port and folder so that it can be restarted."""

    workdir: Path
    port: int
    server: EmbeddedRedis

    @classmethod
    def start(cls, workdir: Path) -> ChaosRedis:
        port = free_port()
        return cls(workdir, port, cls._launch(workdir, port))

    @staticmethod
    def _launch(workdir: Path, port: int) -> EmbeddedRedis:
        return start_redis(workdir, port, databases=DATABASES, persist=True, fsync="everysec")

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, socket_timeout=10, socket_connect_timeout=2)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): the append-only file is flushed."""
        self.server.stop()

    def kill(self) -> None:
        """SIGKILL: up to a second of acknowledged writes may be lost (fsync everysec)."""
        self.server.process.kill()
        self.server.process.wait()

    def restart(self) -> None:
        self.server = self._launch(self.workdir, self.port)


@dataclass
class ChaosFleet:
    """A fleet of real worker processes (and beat), and a producer, on one database."""

    name: str
    db: int
    env: dict[str, str]
    settings: FleetlineSettings
    supervisor: Supervisor
    producer: Producer
    invoice: Path
    log_dir: Path
    direct_url: str

    @classmethod
    def start(
        cls,
        chaos: ChaosRedis,
        workdir: Path,
        name: str,
        db: int,
        *,
        worker_types: list[str] | None = None,
        with_beat: bool = True,
        via_port: int | None = None,
        **extra: str,
    ) -> ChaosFleet:
        folder = workdir / name
        log_dir = folder / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        invoice = folder / "invoice.jsonl"
        # The fleet's own processes and its producer reach Redis through `via_port` (a
        # proxy) when given; the checks always go straight to it.
        url = f"redis://127.0.0.1:{via_port}/{db}" if via_port else chaos.url(db)
        env = child_env(
            {
                **SIM_ENV,
                "FLEETLINE_REDIS_URL": url,
                "FLEETLINE_SIM_INVOICE": str(invoice),
                "FLEETLINE_SPOOL_DIR": str(folder / "spool"),
                "FLEETLINE_LOG_LEVEL": "WARNING",
                **extra,
            }
        )
        settings = settings_for(env)
        worker_types = worker_types or RESEARCH_BRIEF_WORKERS
        supervisor = Supervisor()
        supervisor.start(settings, env, worker_types, with_beat, log_dir=str(log_dir))
        producer = Producer.from_settings(settings)
        fleet = cls(name, db, env, settings, supervisor, producer, invoice, log_dir, chaos.url(db))
        fleet.wait_ready(worker_types)
        return fleet

    def wait_ready(self, names: list[str], timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            replies = self.producer.app.control.ping(timeout=0.5) or []
            seen = {next(iter(r)).rsplit("@", 1)[0].rsplit("-", 1)[0] for r in replies}
            if set(names) <= seen:
                return
        raise RuntimeError(f"{self.name}: workers {names} not ready; see {self.log_dir}")

    @property
    def worker_types(self) -> list[str]:
        """The agents and tools this fleet runs a worker of."""
        return [name for name in self.supervisor.processes if name not in ("beat", "flower")]

    def worker_pids(self) -> dict[str, int]:
        """The live worker processes (not beat), by name."""
        return {
            name: p.pid
            for name, p in self.supervisor.processes.items()
            if name not in ("beat", "flower") and p.poll() is None
        }

    def pool_children(self) -> list[int]:
        found = []
        for pid in self.worker_pids().values():
            try:
                found += [c.pid for c in psutil.Process(pid).children()]
            except psutil.Error:
                continue
        return found

    def stop(self) -> None:
        self.supervisor.stop(timeout_s=30)
        self.producer.app.close()


def kill(pid: int) -> bool:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    return True


def killer(victims: Callable[[], Iterable[int]], seed: int) -> Callable[[], bool]:
    """An action that SIGKILLs one of `victims()` picked at random (False: none to kill)."""
    pick = random.Random(seed)

    def kill_one() -> bool:
        found = sorted(victims())
        return bool(found) and kill(pick.choice(found))

    return kill_one


def research_spec(n: int, tenant: str = "chaos", **extra: Any) -> dict[str, Any]:
    """A research_brief job of a few documents (each job's text its own: no cache hits)."""
    docs = [
        {"id": f"d{i}", "text": f"Acme unit {n} grew {i + n % 7}% in 2025 in region {i}."}
        for i in range(3)
    ]
    return {
        "kind": "research_brief",
        "tenant": tenant,
        "deadline_s": 30,
        "input": {"question": f"How did unit {n} grow?", "documents": docs},
        **extra,
    }


@dataclass
class Submitted:
    job_id: str
    at: float
    deadline_at: float


@dataclass
class JobStream:
    """Jobs submitted at a steady rate from a thread, and what became of each submit."""

    producer: Producer
    spec: Callable[[int], dict[str, Any]] = research_spec
    jobs: list[Submitted] = field(default_factory=list)
    refused: int = 0
    slowest_submit_s: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self, rate_per_s: float, duration_s: float) -> JobStream:
        self._thread = threading.Thread(
            target=self._run, args=(rate_per_s, duration_s), name="chaos-stream", daemon=True
        )
        self._thread.start()
        return self

    def _run(self, rate_per_s: float, duration_s: float) -> None:
        end = time.monotonic() + duration_s
        for n in _ticks(rate_per_s, end, self._stop):
            started = time.monotonic()
            spec = self.spec(n)
            try:
                receipt = self.producer.submit(spec)
            except (FleetlineError, RedisError) as exc:
                # Refused cleanly (Redis away): nothing was half-enqueued, the caller knows.
                self.refused += 1
                log.debug("submit refused: %s", exc)
            else:
                now = time.time()
                self.jobs.append(Submitted(receipt.job_id, now, now + float(spec["deadline_s"])))
            self.slowest_submit_s = max(self.slowest_submit_s, time.monotonic() - started)

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def stop(self) -> None:
        self._stop.set()
        self.join()


def _ticks(rate_per_s: float, end: float, stop: threading.Event) -> Iterator[int]:
    n = 0
    while time.monotonic() < end and not stop.is_set():
        yield n
        n += 1
        time.sleep(1.0 / rate_per_s)


def every(
    period_s: float, duration_s: float, action: Callable[[], Any], jitter: float = 0.5
) -> int:
    """Run `action` every `period_s` (give or take `jitter` of it) for `duration_s`."""
    count = 0
    end = time.monotonic() + duration_s
    rng = random.Random(7)
    while time.monotonic() < end:
        time.sleep(period_s * (1 + rng.uniform(-jitter, jitter)))
        if action():
            count += 1
    return count
