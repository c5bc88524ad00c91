"""`fleetline worker --processes N`: N Celery workers of the same queues under one parent,
each with a node name of its own; a child that dies is started again; SIGTERM to the
parent drains them all (the steps in hand finish and are recorded) and it exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped, unused-ignore]  # no types-psutil in the venv
import pytest

from fleetline.producer.submit import Producer
from fleetline.shared.schemas import JobStatus, OutcomeStatus
from fleetline.shared.settings import load_settings
from tests.integration.conftest import RESEARCH_BRIEF_WORKERS, ROOT

pytestmark = pytest.mark.integration

NODE = "+".join(RESEARCH_BRIEF_WORKERS)


def brief(docs: int, tag: str) -> dict[str, object]:
    documents = [{"id": f"d{i}", "text": f"Acme grew {tag}.{i}% in 2025."} for i in range(docs)]
    return {
        "kind": "research_brief",
        "deadline_s": 60,
        "input": {"question": "How did Acme grow?", "documents": documents},
    }


def nodes(producer: Producer) -> dict[str, int]:
    """Node name (before the @) -> pid, of every worker that answers."""
    replies = producer.app.control.ping(timeout=0.5) or []
    names = [next(iter(r)) for r in replies]
    found = producer.app.control.inspect(destination=names, timeout=1.0).stats() or {}
    return {name.split("@", 1)[0]: int(stats["pid"]) for name, stats in found.items()}


def wait_for(check: object, timeout_s: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}:\n{log.read_text(errors='replace')[-4000:]}"
        time.sleep(0.2)


def test_processes_have_their_own_names_restart_and_drain_on_sigterm(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FLEETLINE_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("FLEETLINE_CACHE_ENABLED", "false")
    monkeypatch.setenv("FLEETLINE_SIM_LATENCY_MS", "1500")
    monkeypatch.setenv("FLEETLINE_SIM_CALL_LOG", str(calls))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = tmp_path / "worker.log"
    command = [sys.executable, "-m", "fleetline.producer.cli", "worker"]
    with log.open("ab") as out:
        parent = subprocess.Popen(
            [*command, "--agents", ",".join(RESEARCH_BRIEF_WORKERS), "--processes", "2"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    producer = Producer.from_settings(load_settings())
    try:
        wanted = {f"{NODE}-1", f"{NODE}-2"}
        wait_for(lambda: set(nodes(producer)) == wanted, 60, "two named workers", log)
        pids = nodes(producer)
        assert len(set(pids.values())) == 2
        assert {c.pid for c in psutil.Process(parent.pid).children()} == set(pids.values())

        # A child killed outright is started again under its name.
        os.kill(pids[f"{NODE}-1"], signal.SIGKILL)
        wait_for(
            lambda: nodes(producer).get(f"{NODE}-1", pids[f"{NODE}-1"]) != pids[f"{NODE}-1"],
            60,
            "the killed worker to come back",
            log,
        )

        # SIGTERM while steps are in hand: they finish and are recorded, then it exits 0.
        receipt = producer.submit(brief(4, "a"))
        wait_for(lambda: calls.exists() and calls.read_text().count("\n") >= 4, 30, "calls", log)
        lines = calls.read_text().splitlines()
        started = {json.loads(line)["call_id"].split(":")[1] for line in lines}
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=60) == 0, log.read_text(errors="replace")[-4000:]
        assert not psutil.pid_exists(pids[f"{NODE}-2"])
        outcomes = producer.store.outcomes(receipt.job_id)
        for step in started:
            assert outcomes[step].status is OutcomeStatus.OK, log.read_text()[-4000:]
        assert producer.store.get(receipt.job_id).status is not JobStatus.FAILED
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        producer.app.close()
