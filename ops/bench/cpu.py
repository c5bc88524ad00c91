"""Where the machine's CPU goes during a sample, which CPUs each process may use, and
pausing the sides that are not being measured.

CPU is counted per process group, never as "the machine minus us": every process on the
machine is read once at each end of a sample (user + system, plus the children it reaped
meanwhile) and put in the group of its nearest ancestor that is a group's root. CPU the
hypervisor gave to other guests (steal) counts as foreign: it is time our processes could
not run.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import psutil  # type: ignore[import-untyped, unused-ignore]  # no types-psutil in the venv

# Processes of this benchmark not in any named group (sides not in the sample, helpers).
OURS = "idle"
# Everything else on the machine, and steal.
FOREIGN = "foreign"
PRODUCER = "producer"


@dataclass(frozen=True)
class CpuSnapshot:
    """Each process's CPU seconds so far (keyed by pid and start time), its group, steal."""

    cpu: dict[tuple[int, float], float]
    group: dict[tuple[int, float], str]
    parent: dict[tuple[int, float], int]
    steal_s: float
    machine_s: float
    # This process: its children's time is not its own CPU (they are the sides).
    me: int = 0

    def minus(self, start: CpuSnapshot) -> dict[str, float]:
        """CPU seconds per group since `start`.

        A process that ended meanwhile shows up in its parent's children's time, all of
        its CPU: what it had used by `start` is taken off its parent's group again. One
        whose parent is gone too (or never reaps) adds nothing.
        """
        out: dict[str, float] = {}
        for key, now in self.cpu.items():
            used = max(0.0, now - start.cpu.get(key, 0.0))
            out[self.group[key]] = out.get(self.group[key], 0.0) + used
        alive = {pid: key for pid, key in ((k[0], k) for k in self.cpu)}
        for key, before in start.cpu.items():
            reaper = alive.get(start.parent.get(key, 0))
            if key in self.cpu or reaper is None or reaper not in start.cpu or reaper[0] == self.me:
                continue
            out[self.group[reaper]] -= before
        out = {name: max(0.0, used) for name, used in out.items()}
        out[FOREIGN] = out.get(FOREIGN, 0.0) + max(0.0, self.steal_s - start.steal_s)
        out["machine"] = self.machine_s - start.machine_s
        return out


def snapshot(roots: Mapping[str, Sequence[int]]) -> CpuSnapshot:
    """Every process's CPU, grouped: `roots` names the root pids of each group; this
    process is `producer`, other processes under it `idle`, the rest `foreign`."""
    me = os.getpid()
    owner = {pid: name for name, pids in roots.items() for pid in pids}
    parents: dict[int, int] = {}
    cpu: dict[int, tuple[float, float]] = {}
    for proc in psutil.process_iter(["pid", "ppid", "cpu_times", "create_time"]):
        info = proc.info
        times = info.get("cpu_times")
        if times is None:
            continue
        own = times.user + times.system
        if info["pid"] != me:
            # A process's reaped children: CPU of processes that ended during the sample.
            own += getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
        parents[info["pid"]] = info["ppid"]
        cpu[info["pid"]] = (own, info["create_time"] or 0.0)
    cache: dict[int, str] = {}

    def group_of(pid: int) -> str:
        if pid == me:
            return PRODUCER
        seen: list[int] = []
        while True:
            if pid in cache:
                found = cache[pid]
                break
            if pid in owner:
                found = owner[pid]
                break
            if pid == me:
                found = OURS
                break
            if not pid:
                found = FOREIGN
                break
            seen.append(pid)
            pid = parents.get(pid, 0)
        for p in seen:
            cache[p] = found
        return found

    t = psutil.cpu_times()
    busy = t.user + t.system + sum(getattr(t, f, 0.0) for f in ("nice", "irq", "softirq", "steal"))
    return CpuSnapshot(
        cpu={(pid, c): used for pid, (used, c) in cpu.items()},
        group={(pid, c): group_of(pid) for pid, (_, c) in cpu.items()},
        parent={(pid, c): parents.get(pid, 0) for pid, (_, c) in cpu.items()},
        steal_s=float(getattr(t, "steal", 0.0)),
        machine_s=float(busy),
        me=me,
    )


# --- CPU affinity ----------------------------------------------------------------------


@dataclass(frozen=True)
class Affinity:
    """The CPUs of the producer (this process) and of everything it measures (workers and
    Redis), kept apart so that submitting and polling never take a worker's CPU."""

    producer: frozenset[int]
    fleet: frozenset[int]

    def as_dict(self) -> dict[str, list[int]]:
        return {"producer": sorted(self.producer), "workers_and_redis": sorted(self.fleet)}


def plan_affinity(enabled: bool) -> Affinity | None:
    """The first CPU for the producer, the others for the fleet; None with fewer than two
    CPUs (or when `enabled` is false): nothing is pinned."""
    if not enabled or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return Affinity(frozenset(cpus[:1]), frozenset(cpus[1:]))


def pin(pids: Iterable[int], cpus: frozenset[int]) -> None:
    """Every thread of these processes and of their children on `cpus` (new threads and
    children inherit it)."""
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error, OSError):
                    for thread in proc.threads():
                        os.sched_setaffinity(thread.id, cpus)


# --- pausing ---------------------------------------------------------------------------


@contextlib.contextmanager
def paused(pids: Sequence[int]) -> Iterator[None]:
    """These processes and their children stopped (SIGSTOP) for the block, and continued
    after it whatever happens: a side not being measured uses no CPU and no Redis."""
    stopped: list[int] = []
    tree: list[int] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            tree += [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    try:
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
                stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
