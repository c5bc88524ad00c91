"""`fleetline up`: the fleet as local processes, one worker per worker type plus beat.

Each worker gets its worker type's queue, pool and concurrency from settings; all of
them are stopped together on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.names import WorkerType
from shared.settings import FleetlineSettings


def worker_command(settings: FleetlineSettings, worker_type: WorkerType) -> list[str]:
    """The `celery worker` command line of one worker type."""
    policy = settings.worker(worker_type)
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "worker",
        "-Q",
        worker_type.value,
        "-P",
        policy.pool,
        "-c",
        str(policy.concurrency),
        "-n",
        f"{worker_type.value}-{os.getpid()}@%h",
        "-l",
        settings.log_level,
        # Gossip, mingle and heartbeats are chatter between workers we do not use.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def beat_command(settings: FleetlineSettings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "beat.app",
        "beat",
        "-S",
        "redbeat.RedBeatScheduler",
        "-l",
        settings.log_level,
    ]


@dataclass
class Fleet:
    """The processes of a local fleet."""

    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(
        self,
        settings: FleetlineSettings,
        env: Mapping[str, str],
        worker_types: list[WorkerType] | None = None,
        with_beat: bool = True,
        log_dir: str | None = None,
    ) -> None:
        commands = {
            wt.value: worker_command(settings, wt) for wt in worker_types or list(WorkerType)
        }
        if with_beat:
            commands["beat"] = beat_command(settings)
        for name, command in commands.items():
            out = open(os.path.join(log_dir, f"{name}.log"), "ab") if log_dir else None  # noqa: SIM115
            self.processes[name] = subprocess.Popen(
                command, env=dict(env), stdout=out, stderr=subprocess.STDOUT if out else None
            )
            if out:
                out.close()

    def alive(self) -> dict[str, bool]:
        return {name: p.poll() is None for name, p in self.processes.items()}

    def stop(self, timeout_s: float = 15.0) -> None:
        """Warm shutdown (SIGTERM) for all, then SIGKILL for whatever is left."""
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
