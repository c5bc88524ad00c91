"""`fleetline up` as a user runs it: SIGKILLed, it leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.test_external_app import FLEETLINE, _env

pytestmark = pytest.mark.integration


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, read from /proc."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(180)
def test_a_sigkilled_fleetline_up_leaves_no_orphan(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [FLEETLINE, "up"],
        cwd=tmp_path,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 90
    seen = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen.append(line)
        if not line or "fleet ready" in line:
            break
    if not any("fleet ready" in line for line in seen):
        process.kill()
        process.wait()
        process.stdout.close()
        pytest.fail("fleetline up did not become ready:\n" + "".join(seen))
    below = _descendants(process.pid)
    # An embedded Redis, beat and one worker per agent and tool (and their pool children).
    assert len(below) >= 6, below

    process.kill()
    process.wait()
    process.stdout.close()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in below) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [pid for pid in below if _alive(pid)]
    for pid in left:  # do not leave them to the next test either
        os.kill(pid, signal.SIGKILL)
    assert left == [], "processes outlived their supervisor"
