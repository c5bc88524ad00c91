"""The time-limit watchdog of a threads (or solo) pool, where Celery enforces no limit.

On prefork Celery's soft and hard time limits end a step. A thread cannot be killed, so on
a threads pool the per-call timeout (`max_call_s`, cut from what is left of the deadline)
is the primary limit and this watchdog the backstop. Every CHECK_EVERY_S it looks at the
steps in hand:

- past its soft time limit, SoftTimeLimitExceeded is raised in the step's thread, as
  prefork raises it in its child, and the step ends `timed_out` through its own path. It
  lands once the thread runs Python again: a call blocked in C (a socket read, a sleep)
  does not see it.
- past its hard time limit (plus HARD_GRACE_S), an agent's or tool's step is recorded
  `timed_out` from here through the normal outcome path (its guards closed: its spend hold
  released or settled; its fan-in sent when it completes the join), its message is acked
  and its thread abandoned. The process then recycles: it stops taking messages, lets the
  other steps in hand finish, and exits RECYCLED_EXIT for its supervisor to start it
  again. Any other task past its hard limit (a fan-in, a stage) is abandoned unacked: like
  a crashed worker's, its message comes back, and its job's deadline watchdog ends the job
  if it never does.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from celery import Task
from celery.concurrency import get_implementation
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_postrun, task_prerun, worker_process_shutdown
from celery.worker import state as worker_state

from fleetline.shared.errors import ModelTimeout, ToolTimeout
from fleetline.shared.fleet import Agent
from fleetline.shared.settings import FleetlineSettings
from fleetline.workers.run import SubtaskRun

log = logging.getLogger(__name__)

# How often the steps in hand are looked at: a limit is seen at most this late.
CHECK_EVERY_S = 0.25
# Past the hard limit, the step's own timeout path gets this long before it is abandoned.
HARD_GRACE_S = 1.0
# After the last live step ends, its ack's round trip gets this long before the exit.
ACK_MARGIN_S = 0.5
# "Drained and recycled: start me again" (EX_TEMPFAIL); producer/supervisor.py's
# RECYCLED_EXIT, which restarts such a worker at once and counts no crash.
RECYCLED_EXIT = os.EX_TEMPFAIL
# Pools whose steps run on threads of this process, and which Celery does not time-limit.
WATCHED_POOLS = ("celery.concurrency.thread", "celery.concurrency.solo")


@dataclass
class InHand:
    """One step being run, on which thread, since when, under which limits (seconds)."""

    task: Task
    thread_id: int
    started: float
    soft_s: float | None
    hard_s: float | None
    soft_sent: bool = False
    abandoned: bool = False


class Watchdog:
    """The steps in hand of this process and what to do when one outlives its limits.

    worker_types: the agents and tools whose steps it records `timed_out` itself.
    drain_s: how long a recycling process waits for its other steps before it exits.
    """

    def __init__(self, worker_types: set[str], drain_s: float) -> None:
        self._worker_types = worker_types
        self._drain_s = drain_s
        self._steps: dict[str, InHand] = {}
        self._lock = threading.Lock()
        self.recycling = False

    def started(self, task_id: str, task: Task) -> None:
        # The message's limits (a fan-in carries its then-step's), else the task's own.
        hard, soft = task.request.timelimit or (None, None)
        step = InHand(
            task,
            threading.get_ident(),
            time.monotonic(),
            soft or task.soft_time_limit,
            hard or task.time_limit,
        )
        with self._lock:
            self._steps[task_id] = step

    def ended(self, task_id: str) -> None:
        # Under the lock: no soft limit is raised into a thread that has moved on.
        with self._lock:
            self._steps.pop(task_id, None)

    def check(self, now: float) -> None:
        """Raise the soft limits due, and abandon the steps past their hard limit."""
        runaways: list[tuple[str, InHand]] = []
        with self._lock:
            for task_id, step in self._steps.items():
                ran = now - step.started
                if step.abandoned:
                    continue
                if step.hard_s is not None and ran > step.hard_s + HARD_GRACE_S:
                    step.abandoned = True
                    runaways.append((task_id, step))
                elif step.soft_s is not None and ran > step.soft_s and not step.soft_sent:
                    step.soft_sent = True
                    raise_in_thread(step.thread_id, SoftTimeLimitExceeded)
        # Outside the lock: recording takes a round trip, and the other steps must end.
        for task_id, step in runaways:
            self._abandon(task_id, step)

    def _abandon(self, task_id: str, step: InHand) -> None:
        name = step.task.name
        log.error("%s %s ran past its hard time limit (%ss): abandoned", name, task_id, step.hard_s)
        if name in self._worker_types:
            try:
                record_runaway(step)
                acknowledge(task_id)
            except Exception:
                log.exception("could not record runaway %s %s", name, task_id)
        if not self.recycling:
            self.recycling = True
            # The consumer stops at its next loop; Celery's warm shutdown drains the rest.
            worker_state.should_stop = RECYCLED_EXIT
            threading.Thread(target=self._exit_when_drained, name="fleetline-recycle").start()

    def live(self) -> int:
        """Steps in hand that were not abandoned."""
        with self._lock:
            return sum(not s.abandoned for s in self._steps.values())

    def _exit_when_drained(self) -> None:
        """Exit once the live steps are done (or after drain_s): the abandoned thread would
        hold a normal exit up for as long as it stays stuck."""
        deadline = time.monotonic() + self._drain_s
        while self.live() and time.monotonic() < deadline:
            time.sleep(CHECK_EVERY_S)
        time.sleep(ACK_MARGIN_S)
        log.warning("recycling: exiting %s for a fresh process", RECYCLED_EXIT)
        try:
            worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=RECYCLED_EXIT)
        finally:
            logging.shutdown()
            os._exit(RECYCLED_EXIT)

    def watch(self) -> None:
        while True:
            time.sleep(CHECK_EVERY_S)
            try:
                self.check(time.monotonic())
            except Exception:
                log.exception("the time-limit watchdog failed; it looks again shortly")


def raise_in_thread(thread_id: int, exc: type[BaseException]) -> bool:
    """Raise `exc` in another thread of this process (when it next runs Python code)."""
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc)
    )
    return bool(done == 1)


def find_run(thread_id: int) -> SubtaskRun | None:
    """The SubtaskRun a thread is running, from its stack (its task's own frames)."""
    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        found = frame.f_locals.get("run")
        if isinstance(found, SubtaskRun):
            return found
        frame = frame.f_back
    return None


def record_runaway(step: InHand) -> None:
    """Record the step `timed_out` as its own thread would have, and send its fan-in when
    that outcome completes the join."""
    from fleetline.workers.task import record  # task imports run's world; not at import

    run = find_run(step.thread_id)
    if run is None:
        log.error("no run found on the stack of runaway %s", step.task.name)
        return
    message = f"ran past its hard time limit ({step.hard_s:g}s) on a threads pool; abandoned"
    error = ModelTimeout(message) if isinstance(run.worker, Agent) else ToolTimeout(message)
    record(run, run.failure(error))
    # Set when this record completed a fan-out's join: its fan-in is sent from here.
    due = getattr(run, "fan_in_due", None)
    if due is not None:
        from fleetline.shared import fan_in_join

        fan_in_join.send(step.task.app, due)


def acknowledge(task_id: str) -> None:
    """Ack the message of a step recorded here: it is done, however its thread ends."""
    for request in list(worker_state.active_requests):
        if request.id == task_id:
            request.acknowledge()


def install(worker: Any, settings: FleetlineSettings) -> Watchdog | None:
    """Start the watchdog in a worker whose pool Celery does not time-limit (threads,
    solo); None on any other pool. `worker` is the `worker_init` signal's sender."""
    pool = get_implementation(worker.pool_cls)
    if pool.__module__ not in WATCHED_POOLS:
        return None
    policies = settings.policies.values()
    drain_s = max(p.time_limit_s for p in policies) + HARD_GRACE_S
    dog = Watchdog(set(settings.fleet.worker_types), drain_s)

    def on_prerun(task_id: str, task: Task, **_: Any) -> None:
        dog.started(task_id, task)

    def on_postrun(task_id: str, **_: Any) -> None:
        dog.ended(task_id)

    task_prerun.connect(on_prerun, weak=False)
    task_postrun.connect(on_postrun, weak=False)
    threading.Thread(target=dog.watch, name="fleetline-time-limits", daemon=True).start()
    return dog
