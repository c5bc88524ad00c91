"""The metrics endpoints of `fleetline worker` and `fleetline serve`, as containers run them:
each serves what its own processes recorded, on the metrics port and nowhere else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fleetline.producer.submit import Producer
from fleetline.shared.embedded_redis import free_port
from fleetline.shared.settings import load_settings
from tests.integration.conftest import FleetFactory
from tests.integration.served_api import serving
from tests.integration.test_cost_control import brief

pytestmark = pytest.mark.integration

FLEETLINE = str(Path(sys.executable).with_name("fleetline"))


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def wait_until(check: object, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if callable(check) and check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} after {timeout_s:g}s")


def test_fleetline_worker_serves_what_its_processes_recorded(
    redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
        "FLEETLINE_METRICS_PORT": str(port),
        "FLEETLINE_SPOOL_DIR": str(tmp_path / "spool"),
        "FLEETLINE_SIM_LATENCY_MS": "10",
    }
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [FLEETLINE, "worker"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: scrape(port) is not None, "no metrics endpoint")
        # This producer (the test) records nothing: it has no PROMETHEUS_MULTIPROC_DIR.
        producer = Producer.from_settings(load_settings())
        job_id = producer.submit(brief(3, "worker")).job_id
        wait_until(lambda: producer.store.get(job_id).status.terminal, "the job did not end")
        job = producer.store.get(job_id)
        producer.app.close()

        found = scrape(port)
        outcomes = Counter(o.worker_type for o in job.subtasks)
        for agent, n in outcomes.items():
            labels = (("agent", agent), ("category", ""), ("status", "ok"))
            assert found[("fleetline_step_outcomes_total", labels)] == n
            assert found[("fleetline_state_mutations_total", (("agent", agent),))] == n
        cost = sum(v for (name, _), v in found.items() if name == "fleetline_cost_usd_total")
        assert cost == pytest.approx(job.cost_usd, abs=1e-12)
        kind = (("kind", "research_brief"), ("status", job.status.value))
        assert found[("fleetline_job_duration_seconds_count", kind)] == 1
        # Only the chord's callback was published here: the test published the steps.
        messages = {k: v for k, v in found.items() if k[0] == "fleetline_messages_total"}
        assert messages == {("fleetline_messages_total", (("queue", "synthesis"),)): 1.0}
        assert list((tmp_path / ".fleetline" / "metrics").glob("counter_*.db"))
    finally:
        worker.terminate()
        worker.wait(timeout=60)
        log.close()


def test_fleetline_serve_serves_its_metrics_on_the_metrics_port_only(
    start_fleet: FleetFactory, tmp_path: Path
) -> None:
    fleet = start_fleet(with_beat=False, FLEETLINE_SIM_LATENCY_MS="10")
    port = free_port()
    folder = tmp_path / "api-metrics"
    with serving(
        fleet, FLEETLINE_METRICS_PORT=str(port), PROMETHEUS_MULTIPROC_DIR=str(folder)
    ) as served:
        acme = served.key("acme")
        spec = brief(3, "serve")
        spec.pop("tenant")
        made = served.http.post("/v1/jobs", json=spec, headers=acme)
        assert made.status_code == 202, made.text
        result = served.finished(made.json()["job_id"], acme)
        assert result["status"] == "succeeded"

        found = scrape(port)
        steps = Counter(o["worker_type"] for o in result["subtasks"])
        # The API process published the fan-out's steps; the workers record nothing here.
        for queue in ("extraction", "classification", "analysis"):
            assert found[("fleetline_messages_total", (("queue", queue),))] == steps[queue]
        assert not any(name == "fleetline_step_outcomes_total" for name, _ in found)
        assert served.http.get("/metrics").status_code == 404
        assert list(folder.glob("counter_*.db"))
