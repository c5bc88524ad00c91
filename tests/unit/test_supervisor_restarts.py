"""The supervisor of `fleetline up` against real processes that keep crashing."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from pathlib import Path

import pytest

from fleetline.producer import supervisor
from fleetline.producer.supervisor import Supervisor


def _crashy(log: Path) -> list[str]:
    """A command that notes when it started and exits 3 at once."""
    code = f"import time; open({str(log)!r}, 'a').write(f'{{time.monotonic()}}\\n'); exit(3)"
    return [sys.executable, "-c", code]


def test_a_process_that_keeps_crashing_backs_off_then_is_given_up_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(supervisor, "RESTART_BACKOFF_S", 0.1)
    monkeypatch.setattr(supervisor, "GIVE_UP_AFTER", 4)
    log = tmp_path / "starts.log"
    fleet = Supervisor()
    fleet._commands["crashy"] = _crashy(log)
    fleet._env = {}
    fleet._spawn("crashy")
    threading.Thread(target=fleet._supervise, daemon=True).start()
    deadline = time.monotonic() + 20
    while "crashy" not in fleet.given_up:
        assert time.monotonic() < deadline, fleet.restarts
        time.sleep(0.05)
    fleet.stop()

    assert fleet.given_up == {"crashy": 3}
    assert fleet.restarts == {"crashy": 4}
    starts = [float(x) for x in log.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Waits of 0.1, 0.2, 0.4 and 0.8 s, each doubling the one before: each gap holds its
    # wait (and the process's start-up, which a loaded machine stretches, on top).
    assert len(gaps) == 4
    assert all(gap >= 0.1 * 2**n for n, gap in enumerate(gaps)), gaps
    assert "giving up on it" in caplog.text


def test_beat_stops_before_the_workers(tmp_path: Path) -> None:
    log = tmp_path / "stops.log"
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        f"    open({str(log)!r}, 'a').write(sys.argv[1] + ' ' + str(time.monotonic()) + '\\n')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "time.sleep(60)\n"
    )
    fleet = Supervisor()
    fleet._env = {}
    for name in ("worker-a", "beat", "worker-b"):
        fleet._commands[name] = [sys.executable, "-c", code, name]
        fleet._spawn(name)
    time.sleep(0.5)  # the handlers are installed
    fleet.stop()
    order = [line.split()[0] for line in log.read_text().splitlines()]
    assert order[0] == "beat" and sorted(order[1:]) == ["worker-a", "worker-b"]
