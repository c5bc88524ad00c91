"""`fleetline up`: the fleet as local processes, one worker per agent and tool plus beat.

Each worker gets its agent's or tool's queue, pool and concurrency from settings. A process
that dies (a crash, an OOM kill, beat losing Redis) is started again after a backoff that
doubles while it keeps dying, as a container orchestrator would, and given up on, loudly,
after `GIVE_UP_AFTER` crashes in a row. A worker that recycles itself (exit
`RECYCLED_EXIT`, see workers/runaway.py) is started again at once and counts as no crash.
`fleetline worker --processes N` runs N workers of the same queues under one of these.
On Ctrl-C or SIGTERM beat stops first (nothing new is scheduled), then the workers (their
warm shutdown finishes the steps in hand). The children die with the supervisor even when
it is SIGKILLed: none is left orphaned.
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

from fleetline.shared.child_process import die_with_parent
from fleetline.shared.errors import ConfigError
from fleetline.shared.names import HOUSEKEEPING_QUEUE
from fleetline.shared.settings import FleetlineSettings

log = logging.getLogger(__name__)

# How often the processes are checked, and the first restart's delay (seconds); the
# delay doubles with every crash in a row, up to the ceiling.
RESTART_BACKOFF_S = 1.0
RESTART_BACKOFF_MAX_S = 30.0
# A process that ran this long before dying starts its backoff afresh.
STABLE_AFTER_S = 60.0
# Crashes in a row (each within STABLE_AFTER_S of its start) before it is given up on.
GIVE_UP_AFTER = 8
FLOWER_INSPECT_TIMEOUT_MS = 5000
# A worker's exit code for "drained and recycled, start me again" (EX_TEMPFAIL): its
# threads pool abandoned a step past its hard time limit (workers/runaway.py).
RECYCLED_EXIT = os.EX_TEMPFAIL


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


def worker_commands(
    settings: FleetlineSettings, worker_types: list[str], processes: int, node: str | None = None
) -> dict[str, list[str]]:
    """The commands of `processes` worker processes for `worker_types`, by process name.

    Each has a node name of its own (`<node>-<i>`, i from 1), so that Flower, `inspect`
    and the audit trail tell them apart; a single process keeps the plain `<node>`.
    """
    if processes < 1:
        raise ConfigError("--processes: run at least one worker process")
    base = node or "+".join(worker_types)
    names = [base] if processes == 1 else [f"{base}-{i}" for i in range(1, processes + 1)]
    return {name: worker_command(settings, worker_types, name) for name in names}


def beat_command(settings: FleetlineSettings) -> list[str]:
    return [
        sys.executable, "-m", "celery", "-A", "fleetline.beat.app", "beat",
        "-S", "redbeat.RedBeatScheduler", "-l", settings.log_level,
    ]  # fmt: skip


def flower_command(port: int) -> list[str]:
    """Flower on loopback; its basic auth comes from FLOWER_BASIC_AUTH in the environment
    (Flower reads FLOWER_* itself), never from the command line, where `ps` would show it."""
    return [
        sys.executable, "-m", "celery", "-A", "fleetline.workers.app", "flower",
        "--address=127.0.0.1", f"--port={port}",
        # Its queue list is the workers' that answer its one start-up inspection: give a
        # busy host's workers the time to.
        f"--inspect_timeout={FLOWER_INSPECT_TIMEOUT_MS}",
    ]  # fmt: skip


@dataclass
class Supervisor:
    """The processes of a local fleet, kept running until `stop()`."""

    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    # Processes that kept crashing and are no longer restarted, with their last exit code.
    given_up: dict[str, int] = field(default_factory=dict)
    _crashes: dict[str, int] = field(default_factory=dict)
    _started_at: dict[str, float] = field(default_factory=dict)
    _due_at: dict[str, float] = field(default_factory=dict)
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
        commands = {
            name: worker_command(settings, [name], f"{name}-{os.getpid()}")
            for name in worker_types or list(settings.fleet.worker_types)
        }
        if with_beat:
            commands["beat"] = beat_command(settings)
        self.start_commands(commands, env, log_dir, supervise)

    def start_commands(
        self,
        commands: Mapping[str, list[str]],
        env: Mapping[str, str],
        log_dir: str | None = None,
        supervise: bool = True,
    ) -> None:
        """Start these processes (by name); with `supervise`, restart any that dies."""
        self._env = dict(env)
        self._log_dir = log_dir
        self._commands.update(commands)
        for name in commands:
            self._spawn(name)
        if supervise:
            threading.Thread(target=self._supervise, name="fleet-supervisor", daemon=True).start()

    def add(self, name: str, command: list[str]) -> None:
        """Start one more process, supervised as the others are."""
        with self._lock:
            self._commands[name] = command
            self._spawn(name)

    def _spawn(self, name: str) -> None:
        out = None
        if self._log_dir:
            out = open(os.path.join(self._log_dir, f"{name}.log"), "ab")  # noqa: SIM115
        try:
            self.processes[name] = subprocess.Popen(
                self._commands[name],
                env=self._env if name != "flower" else _without_metrics(self._env),
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
                # Its own session: a terminal's Ctrl-C reaches the CLI, which stops the
                # fleet in order, rather than every process at once.
                start_new_session=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509  (a prctl call, nothing more)
            )
            self._started_at[name] = time.monotonic()
        finally:
            if out:
                out.close()

    def _supervise(self) -> None:
        # PR_SET_PDEATHSIG follows the thread that forked: restarts are forked from here,
        # and this thread lives as long as the supervisor does.
        while not self._stopping.wait(RESTART_BACKOFF_S / 4):
            with self._lock:
                for name, process in list(self.processes.items()):
                    if self._stopping.is_set() or name in self.given_up:
                        continue
                    if process.poll() is not None:
                        self._restart_when_due(name, process.returncode)

    def _restart_when_due(self, name: str, code: int) -> None:
        now = time.monotonic()
        if code == RECYCLED_EXIT and name not in self._due_at:
            # It drained and left on purpose (a runaway step abandoned): no crash, no wait.
            log.warning("%s recycled itself (a step ran past its time limit); starting it", name)
            self._due_at[name] = now
        elif name not in self._due_at:
            ran_s = now - self._started_at.get(name, now)
            crashes = 1 if ran_s >= STABLE_AFTER_S else self._crashes.get(name, 0) + 1
            self._crashes[name] = crashes
            if crashes > GIVE_UP_AFTER:
                self.given_up[name] = code
                log.error(
                    "%s exited with %s after %d crashes in a row: giving up on it (see its log)",
                    name,
                    code,
                    crashes - 1,
                )
                return
            delay = min(RESTART_BACKOFF_MAX_S, RESTART_BACKOFF_S * 2 ** (crashes - 1))
            self._due_at[name] = now + delay
            log.warning("%s exited with %s; starting it again in %.0fs", name, code, delay)
        if now >= self._due_at[name]:
            del self._due_at[name]
            self.restarts[name] = self.restarts.get(name, 0) + 1
            self._spawn(name)

    def alive(self) -> dict[str, bool]:
        return {name: p.poll() is None for name, p in self.processes.items()}

    def stop(self, timeout_s: float = 15.0) -> None:
        """Beat first, then every worker: warm shutdown (SIGTERM), then SIGKILL for
        whatever is left after `timeout_s`."""
        self._stopping.set()
        with self._lock:
            beat = {k: p for k, p in self.processes.items() if k == "beat"}
            workers = {k: p for k, p in self.processes.items() if k != "beat"}
            for group in (beat, workers):
                _terminate(list(group.values()), timeout_s)


def _without_metrics(env: Mapping[str, str]) -> dict[str, str]:
    # Flower's own metrics (it serves them at its /metrics) stay out of the fleet's registry.
    return {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}


def _terminate(processes: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    """SIGTERM them all at once, wait, and SIGKILL whatever outlives `timeout_s`."""
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for p in processes:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
