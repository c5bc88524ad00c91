"""The trace without Redis: spans encoded compactly, laid out as a waterfall, drawn in the
terminal and as a self-contained page; settings and propagation on their own."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import format_trace_id, get_current_span, set_span_in_context
from rich.console import Console

from fleetline.producer.cli_trace import waterfall
from fleetline.producer.trace_html import render_html
from fleetline.producer.trace_view import view
from fleetline.shared import otel
from fleetline.shared.errors import ConfigError
from fleetline.shared.schemas import JobResult, JobStatus
from fleetline.shared.settings import TraceSettings, read_settings
from fleetline.shared.span_buffer import SpanBuffer
from fleetline.shared.trace_store import decode, encode

T0 = 1_800_000_000.0


def span(
    span_id: str, parent: str | None, name: str, start: float, end: float, **attributes: Any
) -> dict[str, Any]:
    return {
        "span_id": span_id,
        "parent_id": parent,
        "name": name,
        "start": T0 + start,
        "end": T0 + end,
        "attributes": attributes,
    }


TRACE = {
    "trace_id": "ab" * 16,
    "spans": [
        span("r", None, "submit research_brief", 0.0, 0.01, **{otel.JOB_ID: "j"}),
        span("a", "r", "invoke_agent extraction", 0.02, 0.3, **{
            otel.AGENT: "extraction", otel.STEP_ID: "extract-d1", otel.ATTEMPT: 1,
            otel.STATUS: "retry", otel.ERROR_TYPE: "server_error",
        }),
        span("a1", "a", "chat sim-small", 0.03, 0.04, **{
            otel.CALL: "first", otel.ERROR_TYPE: "server_error", otel.AGENT: "extraction",
        }),
        span("b", "r", "invoke_agent extraction", 0.4, 0.6, **{
            otel.AGENT: "extraction", otel.STEP_ID: "extract-d1", otel.ATTEMPT: 2,
            otel.STATUS: "ok",
        }),
        span("b1", "b", "chat sim-small", 0.41, 0.5, **{
            otel.CALL: "first", otel.COST: 0.25, otel.INPUT_TOKENS: 10,
            otel.OUTPUT_TOKENS: 2, otel.AGENT: "extraction",
        }),
        span("b2", "b", "chat sim-small", 0.5, 0.59, **{
            otel.CALL: "correction", otel.COST: 0.5, otel.INPUT_TOKENS: 12,
            otel.OUTPUT_TOKENS: 3, otel.AGENT: "extraction",
        }),
        span("f", "r", "fan_in research_brief", 0.7, 1.0, **{otel.STATUS: "succeeded"}),
        span("s", "f", "invoke_agent <script>alert(1)</script>", 0.71, 0.99, **{
            otel.AGENT: "<script>alert(1)</script>", otel.STEP_ID: "synthesis",
            otel.ATTEMPT: 1, otel.STATUS: "ok",
        }),
        span("s1", "s", "chat sim-long", 0.72, 0.98, **{otel.COST: 1.0, otel.INPUT_TOKENS: 5}),
        # Its parent was not kept (a capped trace): drawn as a root of its own.
        span("o", "lost", "guard cache", 0.8, 0.81, **{otel.VERDICT: "stop"}),
    ],
}  # fmt: skip
JOB = JobResult(
    job_id="j",
    kind="research_brief",
    tenant="t",
    status=JobStatus.SUCCEEDED,
    completeness=1.0,
    cost_usd=1.75,
)


def test_the_waterfall_is_in_tree_order_with_costs_rolled_up() -> None:
    laid = view(TRACE)
    assert [(r.span["span_id"], r.depth) for r in laid.rows] == [
        ("r", 0), ("a", 1), ("a1", 2), ("b", 1), ("b1", 2), ("b2", 2), ("f", 1), ("s", 2),
        ("s1", 3), ("o", 0),
    ]  # fmt: skip
    rows = {r.span["span_id"]: r for r in laid.rows}
    assert rows["r"].cost_usd == 1.75 and rows["r"].own_cost_usd == 0.0
    assert rows["b"].cost_usd == 0.75 and (rows["b"].tokens_in, rows["b"].tokens_out) == (22, 5)
    assert rows["a"].failed and rows["a1"].failed and not rows["b"].failed
    assert laid.failures == 2 and laid.cost_usd == 1.75
    assert rows["s1"].agent == "<script>alert(1)</script>"  # inherited from its step
    assert laid.cost_by_agent == {"<script>alert(1)</script>": 1.0, "extraction": 0.75}
    assert laid.duration_s == pytest.approx(1.0)
    assert rows["b"].offset_s == pytest.approx(0.4)
    assert rows["b2"].detail == "correction"
    assert rows["a"].detail == "extract-d1 #1 · retry · server_error"


def test_the_terminal_waterfall_marks_failures_and_shows_costs() -> None:
    console = Console(record=True, width=220, color_system=None)
    console.print(waterfall(view(TRACE), JOB))
    text = console.export_text()
    assert "job j (research_brief): succeeded, $1.750000, 10 spans, 1,000 ms" in text
    line = next(li for li in text.splitlines() if "extract-d1 #2" in li)
    assert "$0.750000" in line and "22/5" in line
    assert "✗ extract-d1 #1 · retry · server_error" in text
    assert "cost by agent: <script>alert(1)</script> $1.000000, extraction $0.750000" in text
    bars = {li.split("│")[1].strip(): li.split("│")[2] for li in text.splitlines() if "│" in li}
    # The fan-in's bar starts 70 % along the 40-column axis (after the cell's padding).
    assert bars["fan_in research_brief"].index("█") == 1 + 28


def test_the_page_is_self_contained_and_escapes_what_it_shows() -> None:
    page = render_html(TRACE, JOB)
    assert "default-src 'none'" in page
    assert not re.search(r"""(src|href)\s*=|@import|url\(|<script""", page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert len(re.findall(r'<div class="span-row', page)) == 10
    assert len(re.findall(r'<div class="span-row failed', page)) == 2
    assert '<span id="job-cost">$1.750000</span>' in page
    assert 'data-agent="extraction"' in page and "(43%)" in page


def test_spans_are_kept_compact_and_read_back_by_their_full_names() -> None:
    buffer = SpanBuffer()
    provider = TracerProvider()
    provider.add_span_processor(buffer)
    tracer = provider.get_tracer("test")
    root = tracer.start_span("submit", attributes={otel.JOB_ID: "j1"})
    child = tracer.start_span(
        "chat sim-small",
        context=set_span_in_context(root),
        attributes={otel.COST: 0.000123, otel.INPUT_TOKENS: 7, otel.CACHED: False, "x.y": (1, 2)},
    )
    child.end()
    root.end()
    trace_id = root.get_span_context().trace_id
    held = buffer.pending(trace_id)
    assert len(held) == 2
    child_id = format(child.get_span_context().span_id, "016x")
    stored = held[child_id]
    assert "gen_ai" not in stored and "fleetline." not in stored  # short names
    found = decode(child_id, stored)
    assert found["parent_id"] == format(root.get_span_context().span_id, "016x")
    assert found["trace_id"] == format_trace_id(trace_id)
    assert found["attributes"] == {
        otel.COST: 0.000123,
        otel.INPUT_TOKENS: 7,
        otel.CACHED: False,
        "x.y": [1, 2],
    }
    assert found["end"] >= found["start"] > T0 - 1e9
    buffer.discard(trace_id, [child_id])
    assert list(buffer.pending(trace_id)) == [format(root.get_span_context().span_id, "016x")]
    assert json.loads(encode(root)[1])["p"] is None


def test_the_buffer_drops_the_oldest_traces_past_its_bound() -> None:
    buffer = SpanBuffer(max_buffered=3)
    provider = TracerProvider()
    provider.add_span_processor(buffer)
    tracer = provider.get_tracer("test")
    traces = []
    for _ in range(4):
        s = tracer.start_span("step")
        s.end()
        traces.append(s.get_span_context().trace_id)
    assert buffer.pending(traces[0]) == {}
    assert all(len(buffer.pending(t)) == 1 for t in traces[1:])


def test_the_trace_context_travels_as_a_traceparent_header() -> None:
    provider = TracerProvider()
    parent = provider.get_tracer("test").start_span("submit")
    headers = otel.headers_for(parent)
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", headers["traceparent"])
    context = otel.parent_from({**headers, "other": "x"})
    found = get_current_span(context).get_span_context()
    assert (found.trace_id, found.span_id) == (
        parent.get_span_context().trace_id,
        parent.get_span_context().span_id,
    )
    assert otel.parent_from(None) is None and otel.parent_from({"other": "x"}) is None


def test_trace_settings_follow_fleetline_and_opentelemetry_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert TraceSettings().store == "redis" and TraceSettings().enabled
    assert TraceSettings().traces_endpoint is None
    monkeypatch.setenv("FLEETLINE_TRACE_STORE", "off")
    assert not read_settings().trace.enabled
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")
    assert read_settings().trace.traces_endpoint == "http://collector:4318/v1/traces"
    assert read_settings().trace.enabled
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://tempo/otlp/v1/traces")
    assert read_settings().trace.traces_endpoint == "http://tempo/otlp/v1/traces"
    monkeypatch.setenv("FLEETLINE_TRACE_STORE", "sometimes")
    with pytest.raises(ConfigError, match="FLEETLINE_TRACE_STORE"):
        read_settings()


PROBE = """
import sys
from fleetline.shared import otel
from fleetline.shared.settings import TraceSettings
from fleetline.workers.step_trace import StepTrace
otel.init_tracing(TraceSettings(store=sys.argv[1]))
trace = StepTrace.start(None, None) if not otel.enabled() else None
client = object()
assert trace is None or trace.client(client, None, "first") is client
kind = type(otel.tracer()).__name__
print(otel.enabled(), "opentelemetry.sdk.trace" in sys.modules, kind)
"""


@pytest.mark.parametrize(
    ("store", "expected"),
    [("off", "False False NoOpTracer"), ("redis", "True True Tracer")],
)
def test_with_tracing_off_no_sdk_is_loaded(store: str, expected: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, store],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.stdout.strip() == expected
