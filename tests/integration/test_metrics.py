"""Prometheus scrapes a live fleet: every family, checked against what the fleet did.

`fleetline up` (one worker per agent, synthesis on a prefork pool, sim faults on: retries
and correction re-asks happen) serves its host's registry, `fleetline exporter` serves the
fleet-wide gauges, and a real Prometheus server (Debian's package) scrapes both every
second. A producer process on the same host records into the fleet's folder. Research
briefs run (one repeated, so the cache answers it; one left to its deadline with its
analysis queue unconsumed), and each family's PromQL query, through Prometheus's HTTP
API, must give what the state store, the ledger and the queues hold.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
import redis

from fleetline.producer.fleet_gauges import FleetGauges
from fleetline.shared.breakers import BreakerState, RedisBreakers, breaker_redis
from fleetline.shared.celery_app import make_celery, priority_lists, redis_target
from fleetline.shared.embedded_redis import EmbeddedRedis, free_port
from fleetline.shared.ledger import Ledger, Window
from fleetline.shared.schemas import JobResult, JobStatus
from fleetline.shared.settings import FleetlineSettings, load_settings
from fleetline.shared.state import StateStore
from tests.integration.conftest import ROOT, _databases

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus")
FLEETLINE = str(Path(sys.executable).with_name("fleetline"))
SAMPLE = json.loads((ROOT / "ops" / "samples" / "research_brief.json").read_text())
FLEET_ENV = {
    "FLEETLINE_SIM_LATENCY_MS": "20",
    "FLEETLINE_SIM_ERROR_RATE": "0.2",
    "FLEETLINE_SIM_MALFORMED_RATE": "0.3",
    "FLEETLINE_SIM_SEED": "11",
    "FLEETLINE_WORKERS__EXTRACTION__RETRY_BACKOFF_S": "0.05",
    "FLEETLINE_WORKERS__CLASSIFICATION__RETRY_BACKOFF_S": "0.05",
    "FLEETLINE_WORKERS__ANALYSIS__RETRY_BACKOFF_S": "0.05",
    "FLEETLINE_WORKERS__SYNTHESIS__RETRY_BACKOFF_S": "0.05",
    # The then-step (and the fan-in with it) runs in prefork pool children.
    "FLEETLINE_WORKERS__SYNTHESIS__POOL": "prefork",
    "FLEETLINE_WORKERS__SYNTHESIS__CONCURRENCY": "2",
    "FLEETLINE_SPEND_DAILY_USD": "50",
    "FLEETLINE_SPEND_TENANT_HOURLY_USD": '{"acme": 20, "*": 30}',
}
# A producer on the fleet's host: it records into the same folder (PROMETHEUS_MULTIPROC_DIR).
SUBMIT = """
import json, sys, time
from fleetline.producer.submit import Producer
from fleetline.shared.settings import load_settings

producer = Producer.from_settings(load_settings())
for spec in json.loads(sys.argv[1]):
    job_id = producer.submit(spec).job_id
    while not producer.store.get(job_id).status.terminal:
        time.sleep(0.05)
    print(job_id, flush=True)
"""


def spec(question: str, tenant: str, **extra: Any) -> dict[str, Any]:
    return {
        **SAMPLE,
        "tenant": tenant,
        "deadline_s": 60,
        "input": {**SAMPLE["input"], "question": question},
        **extra,
    }


@dataclass
class Fleet:
    """The running scene: the fleet, its exporter, Prometheus, and what was submitted."""

    settings: FleetlineSettings
    client: redis.Redis
    folder: Path
    env: dict[str, str]
    prometheus_url: str
    jobs: list[JobResult] = field(default_factory=list)
    # Messages the test left on the analysis queue (the deadline job's analysis steps).
    stranded: int = 0

    @property
    def breakers(self) -> RedisBreakers:
        return RedisBreakers(
            breaker_redis(redis_target(self.settings), self.settings.breaker),
            self.settings.breaker,
        )

    def query(self, promql: str) -> dict[tuple[tuple[str, str], ...], float]:
        """An instant query's vector, by label set (without name, job and instance)."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = json.loads(reply.read())
        assert body["status"] == "success", body
        return {
            tuple(
                sorted(
                    (k, v)
                    for k, v in r["metric"].items()
                    if k not in ("__name__", "job", "instance")
                )
            ): (float(r["value"][1]))
            for r in body["data"]["result"]
        }


def _start(
    command: list[str], cwd: Path, env: dict[str, str], log: Path
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    out = log.open("wb")
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT), out


def _wait_for(what: str, check: Callable[[], bool], logs: list[Path], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)
    raise AssertionError(f"{what} not ready after {timeout_s:g}s\n{tails}")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as reply:
        return bool(reply.status == 200)


def _stop(process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def fleet(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if PROMETHEUS is None:
        pytest.skip("needs Debian's prometheus (.ci/run installs it)")
    here = tmp_path_factory.mktemp("metrics")
    url = f"redis://127.0.0.1:{redis_server.port}/{next(_databases)}"
    node_port, exporter_port, prometheus_port = free_port(), free_port(), free_port()
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("FLEETLINE_") and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env = {
        **base,
        **FLEET_ENV,
        "FLEETLINE_REDIS_URL": url,
        "FLEETLINE_SPOOL_DIR": str(here / "spool"),
        "FLEETLINE_METRICS_PORT": str(node_port),
        "FLEETLINE_METRICS_EXPORTER_PORT": str(exporter_port),
    }
    (here / "prometheus.yml").write_text(
        json.dumps(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "node",
                        "static_configs": [{"targets": [f"127.0.0.1:{node_port}"]}],
                    },
                    {
                        "job_name": "exporter",
                        "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"]}],
                    },
                ],
            }
        )
    )
    logs = [here / "up.log", here / "exporter.log", here / "prometheus.log"]
    # The fleet's registry is the default folder, .fleetline/metrics under its directory.
    up, up_log = _start([FLEETLINE, "up"], here, env, logs[0])
    exporter, exporter_log = _start([FLEETLINE, "exporter"], here, env, logs[1])
    prometheus, prometheus_log = _start(
        [
            PROMETHEUS,
            f"--config.file={here / 'prometheus.yml'}",
            f"--storage.tsdb.path={here / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
        ],
        here,
        base,
        logs[2],
    )
    settings = load_settings().model_copy(
        update={"redis": load_settings().redis.model_copy(update={"url": url})}
    )
    client = redis.Redis.from_url(url)
    scene = Fleet(
        settings,
        client,
        here / ".fleetline" / "metrics",
        env,
        f"http://127.0.0.1:{prometheus_port}",
    )
    try:
        _wait_for("fleetline up", lambda: "fleet ready" in logs[0].read_text(), logs, 120)
        _wait_for("the exporter", lambda: _http_ok(f"http://127.0.0.1:{exporter_port}/"), logs, 30)
        _wait_for("prometheus", lambda: _http_ok(f"{scene.prometheus_url}/-/ready"), logs, 60)
        run_jobs(scene)
        yield scene
    finally:
        for process in (prometheus, exporter, up):
            _stop(process)
        for log in (up_log, exporter_log, prometheus_log):
            log.close()
        client.close()


def submit(scene: Fleet, specs: list[dict[str, Any]]) -> list[JobResult]:
    """Run the specs one after another from a producer process on the fleet's host."""
    env = {**scene.env, "PROMETHEUS_MULTIPROC_DIR": str(scene.folder)}
    done = subprocess.run(
        [sys.executable, "-c", SUBMIT, json.dumps(specs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    store = StateStore(scene.client, scene.settings.limits.finished_ttl_s)
    return [store.get(job_id) for job_id in done.stdout.split()]


def run_jobs(scene: Fleet) -> None:
    first = spec("How are chip export rules changing revenue?", "acme")
    scene.jobs += submit(
        scene,
        [
            first,
            spec("Where is data-centre money going?", "acme", priority=9),
            spec("Who funds new fabrication plants?", "demo", priority=0),
            first,  # answered from the cache
        ],
    )
    # The analysis worker stops taking its queue: the next job's analysis steps wait
    # there (at the lowest priority, in a list of their own) until the deadline ends it.
    app = make_celery(scene.settings, send_only=True)
    try:
        app.control.cancel_consumer("analysis", reply=True, timeout=5)
        late = spec("What will the next budget vote change?", "demo", priority=0, deadline_s=3)
        scene.jobs += submit(scene, [late])
    finally:
        app.close()
    scene.stranded = sum(int(scene.client.llen(k)) for k in priority_lists("analysis"))


def eventually(
    scene: Fleet, promql: str, expected: dict[tuple[tuple[str, str], ...], float]
) -> None:
    """Until Prometheus has scraped what the fleet did (scrapes come every second)."""
    deadline = time.monotonic() + 30
    found: dict[tuple[tuple[str, str], ...], float] = {}
    while time.monotonic() < deadline:
        found = scene.query(promql)
        if same(found, expected):
            return
        time.sleep(0.5)
    assert found == expected, promql


def same(found: dict[Any, float], expected: dict[Any, float]) -> bool:
    return found.keys() == expected.keys() and all(
        math.isclose(found[k], v, rel_tol=1e-9, abs_tol=1e-12) for k, v in expected.items()
    )


def by(*names: str) -> Callable[..., tuple[tuple[str, str], ...]]:
    """A label set as a query gives it: an empty label (an ok outcome's category) is none."""
    return lambda *values: tuple(sorted((n, v) for n, v in zip(names, values, strict=True) if v))


def outcomes(scene: Fleet) -> list[Any]:
    return [o for job in scene.jobs for o in job.subtasks]


# --- The scene itself --------------------------------------------------------------------


def test_the_scene_has_what_every_family_needs(fleet: Fleet) -> None:
    statuses = [job.status for job in fleet.jobs]
    assert statuses[:4] == [JobStatus.SUCCEEDED] * 4 or JobStatus.DEGRADED in statuses, statuses
    assert statuses[4] is JobStatus.DEGRADED  # the deadline came first
    assert fleet.jobs[3].cost_usd < fleet.jobs[0].cost_usd  # the cache answered the repeat
    assert fleet.stranded == 2
    lowest = [k for k in priority_lists("analysis") if k != "analysis"]
    assert sum(int(fleet.client.llen(k)) for k in lowest) == 2  # not the queue's own list
    assert any(o.attempts > 1 for o in outcomes(fleet)), "no retry happened"


# --- Each host's registry: what the processes did -----------------------------------------


def test_cost_adds_up_to_the_jobs_cost(fleet: Fleet) -> None:
    eventually(fleet, "sum(fleetline_cost_usd_total)", {(): sum(j.cost_usd for j in fleet.jobs)})
    per_agent: dict[Any, float] = defaultdict(float)
    for o in outcomes(fleet):
        if o.cost_usd:
            per_agent[(("agent", o.worker_type),)] += o.cost_usd
    eventually(fleet, "sum by (agent) (fleetline_cost_usd_total) > 0", dict(per_agent))


def test_tokens_are_the_outcomes_tokens(fleet: Fleet) -> None:
    key = by("agent", "direction", "model")
    expected: dict[Any, float] = defaultdict(float)
    for o in outcomes(fleet):
        if o.tokens_in or o.tokens_out:
            expected[key(o.worker_type, "input", o.model)] += o.tokens_in
            expected[key(o.worker_type, "output", o.model)] += o.tokens_out
    eventually(
        fleet, "sum by (agent, model, direction) (fleetline_tokens_total) > 0", dict(expected)
    )


def test_step_outcomes_are_the_recorded_outcomes(fleet: Fleet) -> None:
    key = by("agent", "category", "status")
    expected = Counter(
        key(o.worker_type, o.error.category if o.error else "", o.status.value)
        for o in outcomes(fleet)
    )
    eventually(
        fleet,
        "sum by (agent, status, category) (fleetline_step_outcomes_total)",
        {k: float(v) for k, v in expected.items()},
    )


def test_step_durations_count_every_attempt(fleet: Fleet) -> None:
    key = by("agent", "status")
    ended = Counter(key(o.worker_type, o.status.value) for o in outcomes(fleet))
    eventually(
        fleet,
        'sum by (agent, status) (fleetline_step_duration_seconds_count{status!~"retry|requeued"})',
        {k: float(v) for k, v in ended.items()},
    )
    retried = Counter(o.worker_type for o in outcomes(fleet) for _ in range(o.attempts - 1))
    eventually(
        fleet,
        'sum by (agent) (fleetline_step_duration_seconds_count{status="retry"})',
        {(("agent", a),): float(n) for a, n in retried.items()},
    )
    # Every attempt took some time, and none is running any more.
    assert all(
        v > 0 for v in fleet.query("sum by (agent) (fleetline_step_duration_seconds_sum)").values()
    )
    eventually(fleet, "sum(fleetline_steps_running)", {(): 0.0})


def test_jobs_are_counted_by_kind_and_status_with_their_duration(fleet: Fleet) -> None:
    key = by("kind", "status")
    expected = Counter(key(j.kind, j.status.value) for j in fleet.jobs)
    eventually(
        fleet,
        "sum by (kind, status) (fleetline_job_duration_seconds_count)",
        {k: float(v) for k, v in expected.items()},
    )
    took = sum((j.finished_at or 0) - j.created_at for j in fleet.jobs)
    found = fleet.query("sum(fleetline_job_duration_seconds_sum)")[()]
    assert found == pytest.approx(took, abs=1e-3)
    eventually(
        fleet,
        "sum by (kind) (fleetline_deadline_misses_total)",
        {(("kind", "research_brief"),): 1.0},
    )


def test_state_mutations_are_one_per_recorded_outcome(fleet: Fleet) -> None:
    expected = Counter(o.worker_type for o in outcomes(fleet))
    eventually(
        fleet,
        "sum by (agent) (fleetline_state_mutations_total)",
        {(("agent", a),): float(n) for a, n in expected.items()},
    )


def test_messages_are_every_delivery_and_what_still_waits(fleet: Fleet) -> None:
    expected: Counter[str] = Counter()
    for o in outcomes(fleet):
        expected[o.worker_type] += o.attempts  # a retry is a message of its own
    expected["analysis"] += fleet.stranded
    eventually(
        fleet,
        "sum by (queue) (fleetline_messages_total)",
        {(("queue", q),): float(n) for q, n in expected.items()},
    )


def test_cache_savings_are_the_ledgers(fleet: Fleet) -> None:
    saved = Ledger(fleet.client).spend_report(Window.DAY).saved_by_cache
    assert saved > 0
    eventually(fleet, "sum(fleetline_cache_saved_usd_total)", {(): saved})


# --- The exporter: what Redis holds --------------------------------------------------------


def test_queue_depths_sum_every_priority_list(fleet: Fleet) -> None:
    expected = {(("queue", q),): 0.0 for q in fleet.settings.fleet.worker_types}
    expected[(("queue", "analysis"),)] = float(fleet.stranded)
    eventually(fleet, 'fleetline_queue_depth{queue!="fleetline.housekeeping"}', expected)
    # Beat sends the deadline watchdog every 0.5 s, so a scrape may catch one in flight.
    housekeeping = fleet.query('fleetline_queue_depth{queue="fleetline.housekeeping"}')
    assert list(housekeeping) == [(("queue", "fleetline.housekeeping"),)]
    assert 0 <= housekeeping[(("queue", "fleetline.housekeeping"),)] <= 2


def test_breaker_states_are_the_breakers(fleet: Fleet) -> None:
    names = [b.name for b in fleet.breakers.list_breakers()]
    assert "extraction:sim-small" in names and len(names) >= 4
    # Forced open here, not in the scene: it turns half-open after reset_timeout_s (30 s).
    fleet.breakers.force("extraction:sim-small", BreakerState.OPEN)
    expected = {(("breaker", name),): 0.0 for name in names}
    expected[(("breaker", "extraction:sim-small"),)] = 2.0
    eventually(fleet, "fleetline_breaker_state", expected)


def test_spend_and_limits_are_the_ledgers(fleet: Fleet) -> None:
    ledger = Ledger(fleet.client)
    day, hour = ledger.spend_report(Window.DAY), ledger.spend_report(Window.HOUR)
    acme = sum(j.cost_usd for j in fleet.jobs if j.tenant == "acme")
    assert hour.scopes["tenant:acme"].spent_usd == pytest.approx(acme)
    eventually(
        fleet,
        'fleetline_spend_usd{scope=~"fleet|tenant:acme"}',
        {
            by("scope", "window")("fleet", "day"): day.fleet.spent_usd,
            by("scope", "window")("fleet", "hour"): hour.fleet.spent_usd,
            by("scope", "window")("tenant:acme", "day"): day.scopes["tenant:acme"].spent_usd,
            by("scope", "window")("tenant:acme", "hour"): hour.scopes["tenant:acme"].spent_usd,
        },
    )
    # Limits where one is set; tenant "demo" falls under the "*" default and has no label.
    eventually(
        fleet,
        "fleetline_spend_limit_usd",
        {
            by("scope", "window")("fleet", "day"): 50.0,
            by("scope", "window")("tenant:acme", "hour"): 20.0,
        },
    )
    assert fleet.query('fleetline_spend_usd{scope="tenant:demo"}') == {}
    eventually(fleet, "fleetline_exporter_redis_up", {(): 1.0})


# --- Unacked messages, without a fleet ------------------------------------------------------


def test_a_queue_depth_counts_the_messages_workers_hold_unacked(
    redis_url: str, redis_client: redis.Redis
) -> None:
    settings = load_settings()
    app = make_celery(settings, send_only=True)
    try:
        for priority in (0, 0, 4, 9):
            app.send_task("extraction", args=[{}], queue="extraction", priority=priority)
        with app.connection_for_read() as conn:
            held = conn.SimpleQueue(app.amqp.queues["extraction"]).get(timeout=5)
            breakers = RedisBreakers(
                breaker_redis(redis_target(settings), settings.breaker), settings.breaker
            )
            gauges = {
                m.name: {tuple(s.labels.values()): s.value for s in m.samples}
                for m in FleetGauges(settings, redis_client, breakers).collect()
            }
            assert redis_client.hlen("unacked") == 1  # taken, not acked
            assert held is not None
    finally:
        app.close()
    assert gauges["fleetline_queue_depth"][("extraction",)] == 4.0
    assert gauges["fleetline_queue_depth"][("analysis",)] == 0.0
    assert gauges["fleetline_exporter_redis_up"][()] == 1.0
