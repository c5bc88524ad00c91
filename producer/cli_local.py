"""Local runs for `fleetline up`, `fleetline demo` and `fleetline worker --processes N`: a
Redis if none is set, and the fleet's processes.

Everything started here is stopped here, in reverse order, on normal exit, Ctrl-C or
SIGTERM.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from fleetline.producer.cli_render import notice
from fleetline.producer.supervisor import Supervisor, worker_commands
from fleetline.shared.celery_app import make_celery
from fleetline.shared.embedded_redis import start_redis
from fleetline.shared.errors import FleetlineError
from fleetline.shared.redis_client import make_redis
from fleetline.shared.settings import FleetlineSettings


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so `finally` blocks stop what was started."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def with_redis_url(settings: FleetlineSettings, url: str) -> FleetlineSettings:
    """The same settings, pointing at another Redis."""
    return settings.model_copy(update={"redis": settings.redis.model_copy(update={"url": url})})


@contextmanager
def local_redis(
    settings: FleetlineSettings, workdir: str | None = None
) -> Iterator[tuple[FleetlineSettings, str | None]]:
    """Yield settings with a Redis URL, and the URL of the server started here (or None).

    With FLEETLINE_REDIS_URL set, that Redis is used and nothing is started.
    """
    if settings.redis.url:
        # Fail now (exit 4) rather than start workers that retry a dead Redis forever.
        client = make_redis(settings, timeout_s=settings.redis.submit_timeout_s)
        try:
            client.ping()
        finally:
            client.close()
        yield settings, None
        return
    # Absolute: redis-server changes into --dir before it opens its --logfile inside it.
    where = Path(workdir or settings.redis.embedded_dir).resolve()
    server = start_redis(where)
    # Other commands run in this directory find it there (its port changes every start).
    note = where / URL_FILE
    note.write_text(server.url + "\n")
    try:
        yield with_redis_url(settings, server.url), server.url
    finally:
        if note.exists() and note.read_text().strip() == server.url:
            note.unlink()
        server.stop()


# The file in the embedded Redis's folder that holds its URL while it runs.
URL_FILE = "url"


def embedded_redis_url(settings: FleetlineSettings) -> str | None:
    """The URL of the embedded Redis a `fleetline up` in this directory started, if it
    still answers."""
    note = Path(settings.redis.embedded_dir).resolve() / URL_FILE
    try:
        url = note.read_text().strip()
    except OSError:
        return None
    client = make_redis(with_redis_url(settings, url), timeout_s=0.5)
    try:
        client.ping()
    except Exception:
        return None  # a stale note: that server is gone
    finally:
        client.close()
    return url


def child_env(
    settings: FleetlineSettings, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of the fleet's processes: ours, plus the Redis URL and `extra`."""
    env = {**os.environ, **(extra or {})}
    if settings.redis.url:
        env["FLEETLINE_REDIS_URL"] = settings.redis.url
    if settings.app:
        env["FLEETLINE_APP"] = settings.app
    return env


# What a stopping worker gets past its longest time limit to record its last steps.
STOP_MARGIN_S = 15.0


@contextmanager
def running_fleet(
    settings: FleetlineSettings,
    env: Mapping[str, str],
    log_dir: str | None = None,
) -> Iterator[Supervisor]:
    """Start a worker per agent and tool, and beat; stop them all when the block ends."""
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
    fleet = Supervisor()
    try:
        fleet.start(settings, env, log_dir=log_dir)
        yield fleet
    finally:
        # A second SIGTERM while stopping must not leave workers behind.
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            notice("[dim]stopping the fleet…[/]")
            # The steps in hand may run to their hard time limit; then the closing trip.
            longest = max(p.time_limit_s for p in settings.policies.values())
            fleet.stop(timeout_s=longest + STOP_MARGIN_S)
        finally:
            signal.signal(signal.SIGTERM, previous)


def run_worker_processes(
    settings: FleetlineSettings,
    worker_types: list[str],
    processes: int,
    env: Mapping[str, str],
) -> int:
    """`fleetline worker --processes N`: N workers of the same queues, kept running until
    SIGTERM or Ctrl-C; the exit code.

    A worker that dies (or recycles itself) is started again; one that keeps crashing is
    given up on and the rest are stopped: exit 1. SIGTERM drains them all at once (their
    warm shutdowns finish the steps in hand, up to the longest hard time limit): exit 0.
    """
    fleet = Supervisor()
    longest = max(settings.worker(name).time_limit_s for name in worker_types)
    try:
        with sigterm_as_interrupt():
            try:
                fleet.start_commands(worker_commands(settings, worker_types, processes), env)
                while not fleet.given_up:
                    time.sleep(0.5)
                notice(f"[red]gave up on[/] {', '.join(fleet.given_up)}: they kept crashing")
                return 1
            except KeyboardInterrupt:
                return 0
    finally:
        # A second SIGTERM while draining must not leave workers behind.
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            fleet.stop(timeout_s=longest + STOP_MARGIN_S)
        finally:
            signal.signal(signal.SIGTERM, previous)


def wait_ready(settings: FleetlineSettings, timeout_s: float = 60.0) -> None:
    """Until the worker of every agent and tool of this process's fleet answers a ping.

    Raises FleetlineError when they do not within `timeout_s`.
    """
    app = make_celery(settings, send_only=True)
    # Supervisor names workers `<name>-<our pid>@host`: other fleets on this Redis don't count.
    wanted = {f"{name}-{os.getpid()}@" for name in settings.fleet.worker_types}
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            replies = app.control.ping(timeout=0.5) or []
            names = {name for reply in replies for name in reply}
            missing = {w for w in wanted if not any(n.startswith(w) for n in names)}
            if not missing:
                return
            if time.monotonic() > deadline:
                types = ", ".join(sorted(m.rsplit("-", 1)[0] for m in missing))
                raise FleetlineError(f"workers not ready after {timeout_s:g}s: {types}")
    finally:
        app.close()
