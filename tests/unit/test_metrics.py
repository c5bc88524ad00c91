"""Metrics without a fleet: what each span and hook counts, the label values, and the
multiprocess registry of a host (its folder, its endpoint, its dead processes)."""

from __future__ import annotations

import ast
import os
import re
import socket
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, set_span_in_context
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from fleetline.producer.cli import app as cli
from fleetline.producer.fleet_gauges import FleetGauges
from fleetline.shared import errors, metrics, otel
from fleetline.shared.breakers import RedisBreakers, breaker_redis
from fleetline.shared.celery_app import redis_target
from fleetline.shared.metrics import Families, error_category, recording_into
from fleetline.shared.metrics_node import (
    HostCollector,
    clear_stale,
    mark_dead,
    metrics_dir,
    pid_of,
    serve,
)
from fleetline.shared.metrics_settings import MetricsSettings
from fleetline.shared.metrics_spans import install
from fleetline.shared.redis_client import make_redis
from fleetline.shared.schemas import OutcomeStatus
from fleetline.shared.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    found = CollectorRegistry()
    with recording_into(Families(found)):
        yield found


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def provider(sampler: object = None) -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider as shared/otel.py builds one with metrics on, plus an exporter's view."""
    exported = InMemorySpanExporter()
    found = TracerProvider(**({"sampler": sampler} if sampler is not None else {}))
    found.add_span_processor(SimpleSpanProcessor(exported))
    install(found)
    return found, exported


def step(tracer_provider: TracerProvider, agent: str, status: str, **end: object) -> None:
    """One step attempt's spans, named and attributed as workers/step_trace.py makes them."""
    tracer = tracer_provider.get_tracer("test")
    span = tracer.start_span(
        f"invoke_agent {agent}",
        kind=SpanKind.CONSUMER,
        attributes={otel.OPERATION: "invoke_agent", otel.AGENT: agent, otel.STEP_ID: "s1"},
    )
    context = set_span_in_context(span)
    if end.pop("recorded", False):
        tracer.start_span("guard recorded", context, attributes={otel.GUARD: "recorded"}).end()
    for tokens_in, tokens_out, cost in end.pop("calls", []):  # type: ignore[attr-defined]
        chat = tracer.start_span(
            "chat sim", context, kind=SpanKind.CLIENT, attributes={otel.OPERATION: "chat"}
        )
        chat.set_attributes(
            {
                otel.AGENT: agent,
                otel.MODEL: "sim-small",
                otel.INPUT_TOKENS: tokens_in,
                otel.OUTPUT_TOKENS: tokens_out,
                otel.COST: cost,
            }
        )
        chat.end()
    span.set_attribute(otel.STATUS, status)
    if "category" in end:
        span.set_attribute(otel.ERROR_TYPE, str(end["category"]))
    span.end()


# --- Counted from spans -----------------------------------------------------------------


def test_a_step_counts_its_outcome_duration_tokens_and_cost(registry: CollectorRegistry) -> None:
    found, _ = provider()
    step(found, "extraction", "ok", calls=[(100, 20, 0.002), (30, 10, 0.0005)])
    step(found, "extraction", "failed", category="server_error")

    assert (
        value(registry, "fleetline_step_duration_seconds_count", agent="extraction", status="ok")
        == 1
    )
    ok = {"agent": "extraction", "status": "ok", "category": ""}
    assert value(registry, "fleetline_step_outcomes_total", **ok) == 1
    failed = {"agent": "extraction", "status": "failed", "category": "server_error"}
    assert value(registry, "fleetline_step_outcomes_total", **failed) == 1
    tokens = {"agent": "extraction", "model": "sim-small"}
    assert value(registry, "fleetline_tokens_total", direction="input", **tokens) == 130
    assert value(registry, "fleetline_tokens_total", direction="output", **tokens) == 30
    assert value(registry, "fleetline_cost_usd_total", **tokens) == pytest.approx(0.0025)
    assert value(registry, "fleetline_steps_running", agent="extraction") == 0


def test_a_retry_has_a_duration_and_no_outcome(registry: CollectorRegistry) -> None:
    found, _ = provider()
    step(found, "analysis", "retry", category="rate_limited")

    labels = {"agent": "analysis", "status": "retry"}
    assert value(registry, "fleetline_step_duration_seconds_count", **labels) == 1
    assert (
        registry.get_sample_value(
            "fleetline_step_outcomes_total",
            {"agent": "analysis", "status": "retry", "category": "rate_limited"},
        )
        is None
    )


def test_a_redelivery_the_recorded_guard_answers_counts_nothing(
    registry: CollectorRegistry,
) -> None:
    found, _ = provider()
    step(found, "synthesis", "ok")
    step(found, "synthesis", "ok", recorded=True)

    ok = {"agent": "synthesis", "status": "ok", "category": ""}
    assert value(registry, "fleetline_step_outcomes_total", **ok) == 1
    assert (
        value(registry, "fleetline_step_duration_seconds_count", agent="synthesis", status="ok")
        == 1
    )
    assert value(registry, "fleetline_steps_running", agent="synthesis") == 0


def test_a_step_running_is_a_live_gauge(registry: CollectorRegistry) -> None:
    found, _ = provider()
    span = found.get_tracer("t").start_span(
        "execute_tool lookup", attributes={otel.OPERATION: "execute_tool", otel.TOOL: "lookup"}
    )
    assert value(registry, "fleetline_steps_running", agent="lookup") == 1
    span.set_attribute(otel.STATUS, "ok")
    span.end()
    assert value(registry, "fleetline_steps_running", agent="lookup") == 0


def test_spans_a_sampler_drops_are_counted_and_never_exported(
    registry: CollectorRegistry,
) -> None:
    found, exported = provider(sampler=ALWAYS_OFF)
    step(found, "classification", "ok", calls=[(10, 5, 0.001)])

    ok = {"agent": "classification", "status": "ok", "category": ""}
    assert value(registry, "fleetline_step_outcomes_total", **ok) == 1
    labels = {"agent": "classification", "model": "sim-small"}
    assert value(registry, "fleetline_cost_usd_total", **labels) == pytest.approx(0.001)
    assert exported.get_finished_spans() == ()


def test_nothing_is_counted_in_a_process_that_does_not_record() -> None:
    assert not metrics.recording()
    assert metrics.families() is None
    found, _ = provider()
    step(found, "extraction", "ok", calls=[(1, 1, 0.1)])  # no error, nothing kept


# --- Label values -----------------------------------------------------------------------


def test_outcome_categories_are_empty_for_ok_and_other_when_unlisted() -> None:
    assert error_category("ok", None) == ""
    assert error_category("ok", "timeout") == ""
    assert error_category("failed", "poison") == "poison"
    assert error_category("failed", "my_own_category") == "other"


def test_every_category_the_code_gives_an_outcome_is_listed() -> None:
    """The exceptions' categories and every literal a guard, the gate or a tool gives."""
    found = {
        cls.category
        for cls in _subclasses(errors.StepError)
        if isinstance(getattr(cls, "category", None), str)
    }
    outcome = re.compile(r"outcome\(\s*OutcomeStatus\.\w+,\s*\"(\w+)\"")
    keyword = re.compile(r"category(?:: str)?\s*=\s*\"(\w+)\"")
    for path in (ROOT / "workers").rglob("*.py"):
        text = path.read_text()
        found |= set(outcome.findall(text)) | set(keyword.findall(text))
    assert found, "the scan found no category at all"
    assert found <= metrics.ERROR_CATEGORIES, found - metrics.ERROR_CATEGORIES


def _subclasses(cls: type) -> set[type]:
    direct = set(cls.__subclasses__())
    return {cls} | direct | {c for d in direct for c in _subclasses(d)}


def test_statuses_are_the_outcome_statuses() -> None:
    assert {s.value for s in OutcomeStatus} == metrics.OUTCOME_STATUSES


def test_unknown_statuses_are_not_recorded(registry: CollectorRegistry) -> None:
    metrics.step_ended("extraction", "exploded", None, 1.0)
    metrics.job_ended("research_brief", "running", 1.0)
    labels = {v for m in registry.collect() for sample in m.samples for v in sample.labels.values()}
    assert "exploded" not in labels and "running" not in labels


def test_a_deadline_finalisation_is_a_deadline_miss(registry: CollectorRegistry) -> None:
    metrics.job_ended("research_brief", "degraded", 8.5, reason="deadline")
    metrics.job_ended("research_brief", "succeeded", 2.0, reason="fan_in")
    assert value(registry, "fleetline_deadline_misses_total", kind="research_brief") == 1
    labels = {"kind": "research_brief", "status": "degraded"}
    assert value(registry, "fleetline_job_duration_seconds_sum", **labels) == 8.5


# --- The host's registry: folder, endpoint, dead processes -------------------------------

RECORDER = textwrap.dedent(
    """
    import os, sys, time
    import prometheus_client  # imported before the folder is set, as a CLI command may
    from fleetline.shared import metrics
    from fleetline.shared.metrics_settings import MetricsSettings

    assert metrics.init_metrics(MetricsSettings(multiproc_dir=sys.argv[1]))
    metrics.state_mutation("extraction")
    metrics.cache_saved(0.25)
    metrics.step_started("extraction")  # still running when the process dies
    print(os.getpid(), flush=True)
    if sys.argv[2] == "hang":
        time.sleep(60)
    """
)


def record_in(folder: Path, hang: bool = False) -> subprocess.Popen[str]:
    """A process that records into `folder` (and, with `hang`, waits to be killed)."""
    return subprocess.Popen(
        [sys.executable, "-c", RECORDER, str(folder), "hang" if hang else "exit"],
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
    )


def collected(folder: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for m in HostCollector(folder).collect()
        for s in m.samples
    }


def test_every_process_of_a_host_records_into_one_registry(tmp_path: Path) -> None:
    for process in [record_in(tmp_path), record_in(tmp_path)]:
        process.communicate(timeout=60)
        assert process.returncode == 0

    found = collected(tmp_path)
    assert found[("fleetline_state_mutations_total", (("agent", "extraction"),))] == 2
    assert found[("fleetline_cache_saved_usd_total", ())] == 0.5


def test_a_dead_process_keeps_its_counts_and_loses_its_live_gauges(tmp_path: Path) -> None:
    process = record_in(tmp_path, hang=True)
    assert process.stdout is not None
    pid = int(process.stdout.readline())
    running = ("fleetline_steps_running", (("agent", "extraction"),))
    assert collected(tmp_path)[running] == 1

    process.kill()  # SIGKILL: no exit hook runs
    process.wait()
    process.stdout.close()
    assert mark_dead(tmp_path) == {pid}
    found = collected(tmp_path)
    assert found.get(running, 0) == 0
    assert found[("fleetline_state_mutations_total", (("agent", "extraction"),))] == 1


def test_the_endpoint_owner_clears_what_dead_processes_left(tmp_path: Path) -> None:
    mine = tmp_path / f"counter_{os.getpid()}.db"
    mine.write_bytes(b"")
    process = record_in(tmp_path)
    process.communicate(timeout=60)
    left = {p.name for p in tmp_path.glob("*.db")} - {mine.name}
    assert left, "the recorder wrote no file"

    removed = clear_stale(tmp_path)
    assert {p.name for p in removed} == left
    assert [p.name for p in tmp_path.glob("*.db")] == [mine.name]


def test_file_names_give_their_process() -> None:
    assert pid_of(Path("gauge_livesum_123.db")) == 123
    assert pid_of(Path("counter_9.db")) == 9
    assert pid_of(Path("notes.db")) is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_the_endpoint_serves_the_folder_and_a_taken_port_serves_nothing(
    tmp_path: Path,
) -> None:
    left = tmp_path / "counter_999999999.db"  # an earlier run's
    left.write_bytes(b"")
    settings = MetricsSettings(port=free_port())
    server = serve(settings, tmp_path)
    assert server is not None
    try:
        assert not left.exists()
        process = record_in(tmp_path)
        process.communicate(timeout=60)
        url = f"http://127.0.0.1:{settings.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        # The recorder has ended: its counts are served, its live gauge is not.
        assert 'fleetline_state_mutations_total{agent="extraction"} 1.0' in text
        assert 'fleetline_steps_running{agent="extraction"}' not in text
        files = sorted(tmp_path.glob("*.db"))
        assert serve(settings, tmp_path) is None  # a second endpoint on this host
        assert sorted(tmp_path.glob("*.db")) == files  # and it cleared nothing
    finally:
        server.shutdown()
        server.server_close()


def test_the_folder_is_the_users_else_ours_else_a_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "theirs" / "metrics"
    assert metrics_dir(MetricsSettings(multiproc_dir=str(mine))) == mine.resolve()
    assert mine.is_dir()

    monkeypatch.chdir(tmp_path)
    assert metrics_dir(MetricsSettings()) == (tmp_path / ".fleetline" / "metrics").resolve()

    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / ".fleetline").write_text("a file where the folder would go")
    monkeypatch.chdir(blocked)
    found = metrics_dir(MetricsSettings())
    assert found.name == f"fleetline-metrics-{os.getuid()}" and found.is_dir()


def test_metrics_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLINE_METRICS_PORT", "9900")
    monkeypatch.setenv("FLEETLINE_METRICS_HOST", "0.0.0.0")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/run/fleetline-metrics")
    found = MetricsSettings()
    assert (found.port, found.host, found.multiproc_dir) == (
        9900,
        "0.0.0.0",
        "/run/fleetline-metrics",
    )
    assert (found.exporter_port, found.enabled, found.serve) == (9809, True, False)


def test_a_process_without_the_folder_records_nothing() -> None:
    assert not metrics.init_metrics(MetricsSettings())
    assert not metrics.init_metrics(MetricsSettings(enabled=False, multiproc_dir="/tmp/x"))
    assert not metrics.recording()


def test_the_families_are_the_documented_ones() -> None:
    names = {m.describe()[0].name for m in Families(CollectorRegistry()).__dict__.values()}
    assert names == {
        "fleetline_step_duration_seconds",
        "fleetline_step_outcomes",
        "fleetline_steps_running",
        "fleetline_job_duration_seconds",
        "fleetline_deadline_misses",
        "fleetline_tokens",
        "fleetline_cost_usd",
        "fleetline_state_mutations",
        "fleetline_messages",
        "fleetline_cache_saved_usd",
    }


def test_no_module_makes_a_metric_at_import() -> None:
    """Families are built per process on first use: nothing at module level records."""
    tree = ast.parse((ROOT / "shared" / "metrics.py").read_text())
    made = [
        node.value.func.id
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id in {"Counter", "Gauge", "Histogram", "Families"}
    ]
    assert made == []


def test_serve_refuses_the_metrics_port_as_its_api_port() -> None:
    done = CliRunner().invoke(cli, ["serve", "--port", "9808"])
    assert done.exit_code == 2
    assert "FLEETLINE_METRICS_PORT" in done.output


TRACE_STORE_OFF = textwrap.dedent(
    """
    import sys
    from fleetline.shared import metrics, otel
    from fleetline.shared.metrics_settings import MetricsSettings
    from fleetline.shared.settings import TraceSettings

    otel.init_tracing(TraceSettings(store="off"))
    assert not otel.enabled()
    assert type(otel.tracer()).__name__ == "NoOpTracer"
    assert metrics.init_metrics(MetricsSettings(multiproc_dir=sys.argv[1]))
    assert otel.enabled() and otel.span_buffer() is None
    span = otel.tracer().start_span(
        "invoke_agent extraction",
        attributes={otel.OPERATION: "invoke_agent", otel.AGENT: "extraction"},
    )
    span.set_attribute(otel.STATUS, "ok")
    span.end()
    """
)


def test_with_the_trace_store_off_spans_are_still_made_for_metrics(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", TRACE_STORE_OFF, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
    )
    assert done.returncode == 0, done.stderr
    labels = (("agent", "extraction"), ("category", ""), ("status", "ok"))
    assert collected(tmp_path)[("fleetline_step_outcomes_total", labels)] == 1


def test_the_exporter_says_when_it_cannot_read_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLINE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    settings = load_settings()
    breakers = RedisBreakers(breaker_redis(redis_target(settings), settings.breaker))
    client = make_redis(settings, timeout_s=0.5)
    found = list(FleetGauges(settings, client, breakers).collect())
    assert [(m.name, [s.value for s in m.samples]) for m in found] == [
        ("fleetline_exporter_redis_up", [0.0])
    ]
