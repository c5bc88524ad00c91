"""One metrics endpoint per host or container, serving what every process there recorded.

`fleetline up`, `fleetline worker` and `fleetline serve` choose the folder their processes
record into (`metrics_dir`: PROMETHEUS_MULTIPROC_DIR, else one of ours) and pass it on in
the environment, then `serve` the endpoint. The process that gets the port owns the
folder: it first clears the files no running process holds (what an earlier run left),
and at each scrape drops the live gauges of processes that have died since
(`multiprocess.mark_process_dead`: a SIGKILLed pool child runs no exit hook). Counters
and histograms of dead processes stay: their counts happened. A second endpoint on the
same host finds the port taken and serves nothing (its processes are served by the first
when they share its folder).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from fleetline.shared.errors import ConfigError
from fleetline.shared.metrics_settings import DEFAULT_DIR, MetricsSettings

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client.metrics_core import Metric

log = logging.getLogger(__name__)


def metrics_dir(settings: MetricsSettings) -> Path:
    """The folder this host's processes record into, created: PROMETHEUS_MULTIPROC_DIR,
    else .fleetline/metrics here, else a temporary one (a read-only working directory)."""
    if settings.multiproc_dir:
        candidates = [Path(settings.multiproc_dir)]
    else:
        temporary = Path(tempfile.gettempdir()) / f"fleetline-metrics-{os.getuid()}"
        candidates = [Path(DEFAULT_DIR), temporary]
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK | os.X_OK):
            return path.resolve()
    raise ConfigError(f"PROMETHEUS_MULTIPROC_DIR: cannot write to {candidates[0]}")


def pid_of(path: Path) -> int | None:
    """The process a registry file belongs to (`counter_123.db` -> 123)."""
    tail = path.stem.rpartition("_")[2]
    return int(tail) if tail.isdigit() else None


def alive(pid: int) -> bool:
    """Whether a process with this id runs here."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's
    return True


def clear_stale(folder: Path) -> list[Path]:
    """Remove the files of processes that no longer run; return them."""
    removed = []
    for path in folder.glob("*.db"):
        pid = pid_of(path)
        if pid is not None and not alive(pid):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def mark_dead(folder: Path) -> set[int]:
    """Drop the live gauges of processes that no longer run; return their ids."""
    dead = {
        pid
        for path in folder.glob("gauge_live*.db")
        if (pid := pid_of(path)) is not None and not alive(pid)
    }
    for pid in dead:
        mark_process_dead(pid, str(folder))  # type: ignore[no-untyped-call]
    return dead


class HostCollector:
    """The multiprocess registry of `folder`, with the dead processes' live gauges
    dropped before each read."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._inner = MultiProcessCollector(None, str(folder))  # type: ignore[no-untyped-call]

    def collect(self) -> Iterable[Metric]:
        mark_dead(self._folder)
        found: Iterable[Metric] = self._inner.collect()  # type: ignore[no-untyped-call]
        return found


def serve(settings: MetricsSettings, folder: Path) -> WSGIServer | None:
    """Serve `folder` at settings.host:port and own it (stale files cleared first); None
    when the port is taken (logged: another endpoint serves this host)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HostCollector(folder))
    try:
        server, _ = start_http_server(settings.port, settings.host, registry)
    except OSError as exc:
        log.warning(
            "metrics: cannot listen on %s:%s (%s); this host's endpoint is another "
            "process's (set FLEETLINE_METRICS_PORT to serve these processes' metrics)",
            settings.host,
            settings.port,
            exc.strerror or exc,
        )
        return None
    clear_stale(folder)
    return server
