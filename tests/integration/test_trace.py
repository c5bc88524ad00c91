"""One trace per job across real worker processes: kept in Redis, sent over OTLP, drawn.

One fleet (real Celery workers, sim faults on: retries and correction re-asks happen)
runs a research brief; `fleetline trace JOB --json` must give one tree rooted at the
submit span whose call costs add up to the job's recorded cost, the same spans must reach
a local OTLP/HTTP receiver, and the HTML page must render in a real headless Chromium.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from fleetline.producer.cli import app as cli
from fleetline.producer.submit import Producer
from fleetline.producer.supervisor import Supervisor
from fleetline.shared import keys, otel
from fleetline.shared.embedded_redis import EmbeddedRedis
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import JobResult, JobStatus
from fleetline.shared.settings import get_settings, load_settings
from fleetline.shared.trace_store import load_trace, queue_spans
from tests.integration.conftest import (
    RESEARCH_BRIEF_WORKERS,
    ROOT,
    FleetFactory,
    RunningFleet,
    _databases,
)
from tests.integration.otlp_receiver import OtlpReceiver, start_otlp_receiver
from tests.integration.trace_checks import children_of, subtree

pytestmark = pytest.mark.integration

SAMPLE = json.loads((ROOT / "ops" / "samples" / "research_brief.json").read_text())
# Faults that make retries and correction re-asks, none of which loses a billed call from
# the job's cost (a fault comes before any billing; a re-ask is never malformed).
FAULTS = {
    "FLEETLINE_SIM_ERROR_RATE": "0.25",
    "FLEETLINE_SIM_MALFORMED_RATE": "0.3",
    "FLEETLINE_SIM_SEED": "7",
    "FLEETLINE_WORKERS__EXTRACTION__RETRY_BACKOFF_S": "0.05",
    "FLEETLINE_WORKERS__CLASSIFICATION__RETRY_BACKOFF_S": "0.05",
    "FLEETLINE_WORKERS__ANALYSIS__RETRY_BACKOFF_S": "0.05",
    "FLEETLINE_WORKERS__SYNTHESIS__RETRY_BACKOFF_S": "0.05",
}
runner = CliRunner()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    found = start_otlp_receiver()
    yield found
    found.stop()


@pytest.fixture(scope="module")
def fleet(
    redis_server: EmbeddedRedis,
    receiver: OtlpReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[RunningFleet]:
    """The research brief's workers of the example fleet, exporting to `receiver`, on a
    database of its own; the producer (this process) exports too."""
    folder = tmp_path_factory.mktemp("traced")
    with pytest.MonkeyPatch.context() as env:
        env.setenv(
            "FLEETLINE_REDIS_URL", f"redis://127.0.0.1:{redis_server.port}/{next(_databases)}"
        )
        env.setenv("FLEETLINE_SPOOL_DIR", str(folder / "spool"))
        env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # the SDK's own: export within 0.1 s
        for name, value in FAULTS.items():
            env.setenv(name, value)
        settings = load_settings()
        child_env = {**os.environ, "PYTHONPATH": str(ROOT)}
        supervisor = Supervisor()
        log_dir = folder / "logs"
        log_dir.mkdir()
        supervisor.start(settings, child_env, RESEARCH_BRIEF_WORKERS, False, log_dir=str(log_dir))
        handle = RunningFleet(settings, Producer.from_settings(settings), supervisor, log_dir)
        try:
            handle.wait_ready(RESEARCH_BRIEF_WORKERS)
            yield handle
        finally:
            supervisor.stop()
            handle.producer.app.close()
            otel.shutdown_tracing()


def run_job(fleet: RunningFleet, spec: dict[str, Any]) -> tuple[JobResult, dict[str, Any]]:
    """Submit, wait for the end, then for the fan-in's span (the trace's last write)."""
    receipt = fleet.producer.submit(spec)
    job = fleet.wait(receipt.job_id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = load_trace(fleet.store.client, job.job_id)
        if found and any(s["name"].startswith("fan_in") for s in found["spans"]):
            return job, found
        time.sleep(0.1)
    raise AssertionError(f"no fan-in span for {job.job_id}: {found}\n{fleet.logs()}")


@pytest.fixture(scope="module")
def brief(fleet: RunningFleet) -> tuple[JobResult, dict[str, Any]]:
    job, _ = run_job(fleet, {**SAMPLE, "deadline_s": 60})
    assert job.status is JobStatus.SUCCEEDED, job
    return job, json.loads(fleetline(fleet, "trace", job.job_id, "--json"))


def fleetline(fleet: RunningFleet, *args: str) -> str:
    """Run the `fleetline` command against the fleet's Redis; return what it printed."""
    get_settings.cache_clear()
    # The autouse clean_env fixture empties FLEETLINE_* for each test: name the Redis.
    result = runner.invoke(cli, list(args), env={"FLEETLINE_REDIS_URL": fleet.settings.redis.url})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_trace_is_one_tree_rooted_at_the_submit(
    brief: tuple[JobResult, dict[str, Any]],
) -> None:
    job, found = brief
    spans = found["spans"]
    assert re.fullmatch(r"[0-9a-f]{32}", found["trace_id"])
    assert all(
        set(s) == {"span_id", "parent_id", "name", "start", "end", "attributes"} for s in spans
    )
    ids = {s["span_id"] for s in spans}
    assert len(ids) == len(spans)
    roots = [s for s in spans if s["parent_id"] is None]
    assert [r["name"] for r in roots] == ["submit research_brief"]
    root = roots[0]
    assert root["attributes"][otel.JOB_ID] == job.job_id
    assert root["attributes"][otel.OPERATION] == "invoke_workflow"
    assert all(s["parent_id"] in ids for s in spans if s is not root)
    # Every span reaches the root (no cycle, nothing hanging off a lost parent).
    children = children_of(spans)
    assert len(subtree(root, children)) == len(spans)
    assert all(s["start"] <= s["end"] for s in spans)

    # Each step's attempts hang off the submit (the headers came through the chord, the
    # retries and their countdowns); the then-step hangs off the fan-in.
    steps = [s for s in spans if otel.STEP_ID in s["attributes"]]
    under_root = {s["attributes"][otel.STEP_ID] for s in children[root["span_id"]] if s in steps}
    assert under_root == {o.subtask_id for o in job.subtasks} - {"synthesis"}
    fan_in = next(s for s in spans if s["name"] == "fan_in research_brief")
    assert fan_in["parent_id"] == root["span_id"]
    assert fan_in["attributes"][otel.STATUS] == "succeeded"
    assert fan_in["attributes"][otel.FINALISED] is True
    (then,) = [s for s in children[fan_in["span_id"]] if otel.STEP_ID in s["attributes"]]
    assert then["name"] == "invoke_agent synthesis"

    # The recorded attempt of every step carries its outcome; the faults made retries.
    for outcome in job.subtasks:
        tries = [s for s in steps if s["attributes"][otel.STEP_ID] == outcome.subtask_id]
        last = max(tries, key=lambda s: s["attributes"][otel.ATTEMPT])
        assert last["attributes"][otel.ATTEMPT] == outcome.attempts
        assert last["attributes"][otel.STATUS] == outcome.status.value
        assert all(s["attributes"][otel.STATUS] == "retry" for s in tries if s is not last)
        assert all(otel.ERROR_TYPE in s["attributes"] for s in tries if s is not last)
    assert any(s["attributes"][otel.ATTEMPT] > 1 for s in steps)
    calls = [s for s in spans if s["attributes"].get(otel.OPERATION) == "chat"]
    assert {s["attributes"][otel.CALL] for s in calls} >= {"first", "correction"}
    for call in calls:
        a = call["attributes"]
        assert a[otel.PROVIDER] == "sim" and a[otel.REQUEST_MODEL].startswith("sim-")
        assert a[otel.AGENT] in ("extraction", "classification", "analysis", "synthesis")
        if otel.ERROR_TYPE not in a:
            assert a[otel.RESPONSE_MODEL] == a[otel.MODEL]
            assert a[otel.INPUT_TOKENS] > 0 and a[otel.OUTPUT_TOKENS] > 0

    # No prompt, document, question or answer text in any span.
    dumped = json.dumps(found)
    for text in [
        SAMPLE["input"]["question"],
        *(d["text"][:40] for d in SAMPLE["input"]["documents"]),
    ]:
        assert text not in dumped
    assert "Halcyon" not in dumped


def test_the_calls_costs_add_up_to_the_jobs_cost(
    fleet: RunningFleet, brief: tuple[JobResult, dict[str, Any]]
) -> None:
    job, found = brief
    spans = found["spans"]
    children = children_of(spans)
    costs = [s["attributes"][otel.COST] for s in spans if otel.COST in s["attributes"]]
    assert job.cost_usd > 0
    # Floats added in another order (Redis adds the outcomes in long double): equal to a
    # thousandth of a nano-dollar, the ledger's unit.
    assert math.isclose(math.fsum(costs), job.cost_usd, rel_tol=0, abs_tol=1e-12)
    # Step by step: the recorded attempt's calls are exactly what its outcome counts.
    for outcome in job.subtasks:
        (attempt,) = [
            s
            for s in spans
            if s["attributes"].get(otel.STEP_ID) == outcome.subtask_id
            and s["attributes"][otel.ATTEMPT] == outcome.attempts
        ]
        below = subtree(attempt, children)
        usage = [s["attributes"] for s in below]
        assert sum(a.get(otel.INPUT_TOKENS, 0) for a in usage) == outcome.tokens_in
        assert sum(a.get(otel.OUTPUT_TOKENS, 0) for a in usage) == outcome.tokens_out
        spent = math.fsum(a.get(otel.COST, 0.0) for a in usage)
        assert math.isclose(spent, outcome.cost_usd, rel_tol=0, abs_tol=1e-15)
    # The job's trace is kept as long as its record.
    client = fleet.store.client
    job_ttl, trace_ttl = client.pttl(keys.job(job.job_id)), client.pttl(keys.job_trace(job.job_id))
    assert abs(job_ttl - trace_ttl) < 60_000, (job_ttl, trace_ttl)


def test_the_same_spans_reach_an_otlp_receiver(
    brief: tuple[JobResult, dict[str, Any]], receiver: OtlpReceiver
) -> None:
    _, found = brief
    stored = {s["span_id"]: s for s in found["spans"]}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not set(stored) <= set(receiver.received()):
        time.sleep(0.2)
    got = receiver.received()
    assert set(stored) <= set(got), sorted(set(stored) - set(got))
    for span_id, mine in stored.items():
        sent = got[span_id]
        assert sent.trace_id == found["trace_id"]
        assert sent.parent_id == mine["parent_id"]
        assert sent.name == mine["name"]
        assert sent.service == "fleetline"
        assert sent.attributes == mine["attributes"]
        assert abs(sent.start - mine["start"]) < 1e-5 and abs(sent.end - mine["end"]) < 1e-5


def test_a_cached_rerun_is_traced_at_no_cost(fleet: RunningFleet) -> None:
    first, _ = run_job(fleet, {**SAMPLE, "deadline_s": 60})
    again, found = run_job(fleet, {**SAMPLE, "deadline_s": 60})
    assert again.status is JobStatus.SUCCEEDED and again.cost_usd == 0.0, again
    steps = [s for s in found["spans"] if otel.STEP_ID in s["attributes"]]
    assert steps and all(s["attributes"][otel.CACHED] for s in steps)
    # The cache answered: its verdict stopped each step before any call.
    guards = [s for s in found["spans"] if s["name"] == "guard cache"]
    assert len(guards) == len(steps)
    assert all(g["attributes"][otel.VERDICT] == "stop" for g in guards)
    assert not [s for s in found["spans"] if s["attributes"].get(otel.OPERATION) == "chat"]
    assert first.job_id != again.job_id


def test_batched_calls_are_spans_with_their_share(fleet: RunningFleet) -> None:
    docs = [
        {
            "id": f"b{i}",
            "text": f"Orbit Labs raised ${i + 2} million in 2026; Ana Ruiz led item {i}.",
        }
        for i in range(6)
    ]
    spec = {
        "kind": "research_brief",
        "deadline_s": 60,
        "latency_profile": "batch",
        "input": {"question": "Who raised money?", "documents": docs},
    }
    job, found = run_job(fleet, spec)
    assert job.status.terminal, job
    spans = found["spans"]
    batched = [s for s in spans if s["attributes"].get(otel.CALL) == "batch"]
    assert batched, [s["name"] for s in spans]
    assert all(s["attributes"][otel.BATCH_SIZE] >= 2 for s in batched)
    # Every recorded step's calls, its batch share included, are what its outcome counts.
    children = children_of(spans)
    for outcome in job.subtasks:
        (attempt,) = [
            s
            for s in spans
            if s["attributes"].get(otel.STEP_ID) == outcome.subtask_id
            and s["attributes"][otel.ATTEMPT] == outcome.attempts
        ]
        spent = math.fsum(a["attributes"].get(otel.COST, 0.0) for a in subtree(attempt, children))
        assert math.isclose(spent, outcome.cost_usd, rel_tol=0, abs_tol=1e-15)


def test_tool_steps_are_execute_tool_spans_without_their_arguments(
    start_fleet: FleetFactory, tmp_path: Path
) -> None:
    tools = start_fleet(
        with_beat=False,
        FLEETLINE_APP="tests.integration.tool_fleet:fleet",
        TOOLS_STATE_DIR=str(tmp_path / "state"),
    )
    spec = {"kind": "tool_job", "input": {"tool": "flaky", "n": 2}, "deadline_s": 20}
    job = tools.wait(tools.producer.submit(spec).job_id)
    assert job.status is JobStatus.SUCCEEDED, tools.logs()
    found = load_trace(tools.store.client, job.job_id)
    assert found is not None
    steps = [s for s in found["spans"] if s["name"] == "execute_tool flaky"]
    tries = sorted((s["attributes"][otel.STEP_ID], s["attributes"][otel.ATTEMPT]) for s in steps)
    assert tries == [("t-0", 1), ("t-0", 2), ("t-1", 1), ("t-1", 2)]
    for step in steps:
        a = step["attributes"]
        assert a[otel.TOOL] == "flaky" and a[otel.OPERATION] == "execute_tool"
        assert (a[otel.STATUS], a.get(otel.ERROR_TYPE)) == (
            ("retry", "tool_error") if a[otel.ATTEMPT] == 1 else ("ok", None)
        )
    # The tool's arguments ({"key": "flaky-0"}) stay out of the trace.
    assert "flaky-0" not in json.dumps(found)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_the_html_page_renders_in_headless_chromium(
    fleet: RunningFleet, brief: tuple[JobResult, dict[str, Any]], tmp_path: Path
) -> None:
    job, found = brief
    page = tmp_path / "trace.html"
    fleetline(fleet, "trace", job.job_id, "--html", str(page))
    text = page.read_text()
    # Self-contained: nothing to fetch.
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", text)

    dom = chromium("--dump-dom", page.as_uri())
    rows = re.findall(r'<div class="span-row[^"]*" data-span-id="([0-9a-f]{16})"', dom)
    assert sorted(rows) == sorted(s["span_id"] for s in found["spans"])
    agents = set(re.findall(r'<g class="agent-cost" data-agent="([^"]+)"', dom))
    assert agents == {"extraction", "classification", "analysis", "synthesis"}
    assert f'<span id="job-cost">${job.cost_usd:,.6f}</span>' in dom
    assert '<span class="status succeeded" id="job-status">succeeded</span>' in dom
    assert "submit research_brief" in dom and "fan_in research_brief" in dom

    shot = tmp_path / "trace.png"
    chromium(f"--screenshot={shot}", "--window-size=1400,1100", page.as_uri())
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1400, 1100)


def chromium(*args: str) -> str:
    assert CHROMIUM is not None
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    return done.stdout


# --- the store on its own -------------------------------------------------------------


def test_the_store_keeps_spans_with_the_job_and_caps_them(redis_client: redis.Redis) -> None:
    job_key = keys.job("j1")
    redis_client.hset(job_key, mapping={"status": "succeeded", "deadline_at": time.time()})
    redis_client.expire(job_key, 500)
    span = '{"t":"%s","p":null,"n":"x","s":1,"e":2,"a":{}}' % ("ab" * 16)

    def write(job_id: str, span_ids: list[str], max_spans: int = 10) -> Any:
        trip = RoundTrip(redis_client)
        index = queue_spans(trip, job_id, {i: span for i in span_ids}, 3600, max_spans)
        return trip.execute()[index]

    assert write("j1", [f"{i:016x}" for i in range(12)]) == 10
    assert redis_client.hlen(keys.job_trace("j1")) == 10
    # Written again (a closing trip re-run after a lost reply): nothing changes.
    assert write("j1", [f"{i:016x}" for i in range(3)]) == 3
    assert redis_client.hlen(keys.job_trace("j1")) == 10
    assert 0 < redis_client.pttl(keys.job_trace("j1")) <= 500_000
    assert redis_client.pttl(keys.job_trace("j1")) > 490_000
    # A job that is gone keeps no trace.
    assert write("gone", ["0" * 16]) == -1
    assert not redis_client.exists(keys.job_trace("gone"))
    found = load_trace(redis_client, "j1")
    assert found is not None and found["trace_id"] == "ab" * 16 and len(found["spans"]) == 10
    assert load_trace(redis_client, "gone") is None


def test_a_running_jobs_trace_outlives_it_until_finalising_would(
    redis_client: redis.Redis,
) -> None:
    deadline_at = time.time() + 100
    redis_client.hset(keys.job("j2"), mapping={"status": "running", "deadline_at": deadline_at})
    redis_client.expire(keys.job("j2"), 1000)
    trip = RoundTrip(redis_client)
    queue_spans(trip, "j2", {"1" * 16: "{}"}, 3600, 10)
    trip.execute()
    # To the deadline plus the finished-job TTL: finalising gives the record as much.
    assert 3_690_000 < redis_client.pttl(keys.job_trace("j2")) <= 3_700_000
