"""`fleetline up`: the fleet as local processes, one worker per agent and tool plus beat.

Each worker gets its agent's or tool's queue, pool and concurrency from settings. A process
that dies (a crash, an OOM kill, beat losing Redis) is started again, as a container
orchestrator would; all of them stop together on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from fleetline.shared.errors import ConfigError
from fleetline.shared.names import HOUSEKEEPING_QUEUE
from fleetline.shared.settings import FleetlineSettings

log = logging.getLogger(__name__)

# A process that keeps dying is restarted no more often than this (seconds).
RESTART_BACKOFF_S = 1.0


def worker_command(
    settings: FleetlineSettings, worker_types: list[str], node: str | None = None
) -> list[str]:
    """The `celery worker` command line of one worker process for `worker_types` (agents
    and tools of the bound fleet), which also consumes the housekeeping queue.

    Its pool is theirs (they must agree) and its concurrency the largest of theirs.
    """
    if not worker_types:
        raise ConfigError("name at least one agent or tool")
    policies = {name: settings.worker(name) for name in worker_types}
    pools = {p.pool for p in policies.values()}
    if len(pools) > 1:
        raise ConfigError(
            f"{', '.join(worker_types)} run on different pools ({', '.join(sorted(pools))}): "
            "give each its own worker"
        )
    return [
        sys.executable, "-m", "celery", "-A", "fleetline.workers.app", "worker",
        "-Q", ",".join([*worker_types, HOUSEKEEPING_QUEUE]),
        "-P", pools.pop(),
        "-c", str(max(p.concurrency for p in policies.values())),
        "-n", f"{node or '+'.join(worker_types)}@%h",
        "-l", settings.log_level,
        # Gossip, mingle and heartbeats are chatter between workers we do not use.
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip


def beat_command(settings: FleetlineSettings) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "fleetline.beat.app", "beat",
        "-S", "redbeat.RedBeatScheduler", "-l", settings.log_level,
    ]  # fmt: skip


@dataclass
class Supervisor:
    """The processes of a local fleet, kept running until `stop()`."""

    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    _commands: dict[str, list[str]] = field(default_factory=dict)
    _env: dict[str, str] = field(default_factory=dict)
    _log_dir: str | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(
        self,
        settings: FleetlineSettings,
        env: Mapping[str, str],
        worker_types: list[str] | None = None,
        with_beat: bool = True,
        log_dir: str | None = None,
        supervise: bool = True,
    ) -> None:
        """Start the processes; with `supervise`, restart any that dies."""
        self._env = dict(env)
        self._log_dir = log_dir
        for name in worker_types or list(settings.fleet.worker_types):
            self._commands[name] = worker_command(settings, [name], f"{name}-{os.getpid()}")
        if with_beat:
            self._commands["beat"] = beat_command(settings)
        for name in self._commands:
            self._spawn(name)
        if supervise:
            threading.Thread(target=self._supervise, name="fleet-supervisor", daemon=True).start()

    def _spawn(self, name: str) -> None:
        out = None
        if self._log_dir:
            out = open(os.path.join(self._log_dir, f"{name}.log"), "ab")  # noqa: SIM115
        try:
            self.processes[name] = subprocess.Popen(
                self._commands[name],
                env=self._env,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                # Its own session: a terminal's Ctrl-C reaches the CLI, which stops the
                # fleet in order, rather than every process at once.
                start_new_session=True,
            )
        finally:
            if out:
                out.close()

    def _supervise(self) -> None:
        while not self._stopping.wait(RESTART_BACKOFF_S):
            with self._lock:
                for name, process in list(self.processes.items()):
                    if process.poll() is not None and not self._stopping.is_set():
                        log.warning(
                            "%s exited with %s; starting it again", name, process.returncode
                        )
                        self.restarts[name] = self.restarts.get(name, 0) + 1
                        self._spawn(name)

    def alive(self) -> dict[str, bool]:
        return {name: p.poll() is None for name, p in self.processes.items()}

    def stop(self, timeout_s: float = 15.0) -> None:
        """Warm shutdown (SIGTERM) for all, then SIGKILL for whatever is left."""
        self._stopping.set()
        with self._lock:
            for p in self.processes.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            for p in self.processes.values():
                try:
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
