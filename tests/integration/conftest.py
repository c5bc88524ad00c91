"""Real parts: a Redis server these tests started, and real Celery worker processes.

One server serves the session; each test gets a database of its own, so nothing here
ever flushes a Redis it did not start.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from fleetline.producer.submit import Producer
from fleetline.producer.supervisor import Supervisor
from fleetline.shared.embedded_redis import EmbeddedRedis, start_redis
from fleetline.shared.schemas import JobResult
from fleetline.shared.settings import FleetlineSettings, load_settings
from fleetline.shared.state import StateStore

ROOT = Path(__file__).resolve().parents[2]
_databases = itertools.count(1)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = start_redis(tmp_path_factory.mktemp("redis"), databases=256)
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch) -> str:
    db = next(_databases)
    url = f"redis://127.0.0.1:{redis_server.port}/{db}"
    monkeypatch.setenv("FLEETLINE_REDIS_URL", url)
    return url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@dataclass
class RunningFleet:
    """A fleet of real worker processes and a producer, all on this test's database."""

    settings: FleetlineSettings
    producer: Producer
    fleet: Supervisor
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def store(self) -> StateStore:
        return self.producer.store

    @property
    def worker_types(self) -> list[str]:
        """The agents and tools this fleet runs a worker of."""
        return [name for name in self.fleet.processes if name != "beat"]

    def wait(self, job_id: str, timeout_s: float = 60.0) -> JobResult:
        """Poll the state store until the job is terminal."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.store.get(job_id)
            if job.status.terminal:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"job {job_id} still {job.status} after {timeout_s}s: {self.logs()}"
                )
            time.sleep(0.1)

    def wait_ready(self, names: list[str], timeout_s: float = 60.0) -> None:
        """Until every named worker answers a ping."""
        app = self.producer.app
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=0.5) or []
            seen = {next(iter(r)).rsplit("@", 1)[0].rsplit("-", 1)[0] for r in replies}
            if set(names) <= seen:
                return
        raise AssertionError(f"workers {names} not ready: {self.logs()}")

    def logs(self) -> str:
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


FleetFactory = Callable[..., RunningFleet]

# The workers of the example fleet's research_brief, the kind most tests run: a fleet of
# the example app starts just these unless the test names its own (every process more
# costs every test seconds); a fleet of another app starts all of that app's.
RESEARCH_BRIEF_WORKERS = ["extraction", "classification", "analysis", "synthesis"]


@pytest.fixture
def start_fleet(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FleetFactory]:
    """Start worker processes (and beat) with extra FLEETLINE_ settings for this test: the
    `worker_types` named, else those of RESEARCH_BRIEF_WORKERS or another app's all."""
    running: list[RunningFleet] = []

    def start(
        worker_types: list[str] | None = None,
        with_beat: bool = True,
        **env: str,
    ) -> RunningFleet:
        # Each test's workers write ahead to a folder of their own.
        monkeypatch.setenv("FLEETLINE_SPOOL_DIR", str(tmp_path / "spool"))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = load_settings()
        if worker_types is None and not settings.app:
            worker_types = RESEARCH_BRIEF_WORKERS
        child_env = {**os.environ, "PYTHONPATH": str(ROOT)}
        fleet = Supervisor()
        log_dir = tmp_path / f"logs-{len(running)}"
        log_dir.mkdir()
        fleet.start(settings, child_env, worker_types, with_beat, log_dir=str(log_dir))
        producer = Producer.from_settings(settings)
        handle = RunningFleet(settings, producer, fleet, log_dir, child_env)
        running.append(handle)
        handle.wait_ready(worker_types or list(settings.fleet.worker_types))
        return handle

    yield start
    for handle in running:
        handle.fleet.stop()
        handle.producer.app.close()
