"""Flower as users run it: `fleetline up --flower` behind basic auth, its queue lengths (the
data behind its Broker page) those of the agents' queues, priority lists included."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from fleetline.shared.celery_app import priority_lists
from fleetline.shared.embedded_redis import free_port
from tests.e2e.test_external_app import FLEETLINE, _env

pytestmark = pytest.mark.integration

AUTH = ("ops", "s3cret-flower")


def spec(priority: int) -> dict[str, object]:
    docs = [{"id": f"d{i}", "text": f"Acme grew {i}% in 2025."} for i in range(6)]
    return {
        "kind": "research_brief",
        "priority": priority,
        "deadline_s": 120,
        "input": {"question": "How did Acme grow?", "documents": docs},
    }


@pytest.fixture
def flower_up(tmp_path: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {
        **_env(tmp_path),
        "FLOWER_BASIC_AUTH": ":".join(AUTH),
        # One extraction at a time, each call long: the rest of a job's extractions wait.
        "FLEETLINE_WORKERS__EXTRACTION__CONCURRENCY": "1",
        "FLEETLINE_SIM_LATENCY_MS": "8000",
    }
    process = subprocess.Popen(
        [FLEETLINE, "up", "--flower", "--flower-port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not any("fleet ready" in s for s in seen):
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
    found = re.search(r"embedded Redis at (\S+)", "".join(seen))
    if not (found and any("fleet ready" in s for s in seen)):
        process.kill()
        pytest.fail("fleetline up did not become ready:\n" + "".join(seen))
    try:
        yield found.group(1), port
    finally:
        # The long calls are not worth waiting for; the fleet's processes die with it.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        process.stdout.close()


def submit(workdir: Path, priority: int) -> None:
    path = workdir / f"spec-{priority}.json"
    path.write_text(json.dumps(spec(priority)))
    done = subprocess.run(
        [FLEETLINE, "submit", str(path), "--json"],
        cwd=workdir,
        env=_env(workdir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.timeout(240)
def test_flower_shows_a_backlog_it_did_not_make_behind_auth(
    flower_up: tuple[str, int], tmp_path: Path
) -> None:
    url, port = flower_up
    with (
        redis.Redis.from_url(url) as client,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as flower,
    ):
        backlog_shown(client, flower, tmp_path)


def backlog_shown(client: redis.Redis, flower: httpx.Client, tmp_path: Path) -> None:
    for priority in (0, 9):
        submit(tmp_path, priority)
    lists = priority_lists("extraction")
    deadline = time.monotonic() + 30
    while sum(1 for name in lists if client.llen(name)) < 2:
        assert time.monotonic() < deadline, "no backlog on two of extraction's lists"
        time.sleep(0.2)

    deadline = time.monotonic() + 60
    while True:
        try:
            if flower.get("/api/queues/length").status_code == 401:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "Flower did not answer"
        time.sleep(0.5)

    deadline = time.monotonic() + 30
    while True:
        before = sum(int(client.llen(name)) for name in lists)
        answer = flower.get("/api/queues/length", auth=AUTH)
        after = sum(int(client.llen(name)) for name in lists)
        assert answer.status_code == 200, answer.text
        queues = {q["name"]: q["messages"] for q in answer.json()["active_queues"]}
        if before == after:
            break
        assert time.monotonic() < deadline, "the backlog never held still"
    assert queues.get("extraction") == before > 0, queues
    assert flower.get("/broker", auth=AUTH).status_code == 200
    assert "extraction" in flower.get("/broker", auth=AUTH).text


def test_up_refuses_flower_without_its_credentials(tmp_path: Path) -> None:
    env = {k: v for k, v in _env(tmp_path).items() if k != "FLOWER_BASIC_AUTH"}
    done = subprocess.run(
        [FLEETLINE, "up", "--flower"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "FLOWER_BASIC_AUTH" in done.stderr
