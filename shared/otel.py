"""OpenTelemetry: one trace per job, the names its spans carry, and each process's tracer.

The producer opens a job's root span at submit; its context travels in the Celery message
headers (`traceparent`, W3C Trace Context), which Celery keeps on chord callbacks, on
`task.retry` and on redeliveries. Every step attempt, model call, stopping guard verdict,
wait and fan-in is a span under it. Names follow OpenTelemetry's GenAI semantic
conventions where they cover the thing (`gen_ai.*`, `error.type`); the rest is
`fleetline.*`. No span ever holds a prompt, a document or a tool's arguments.

Each process builds its tracer on first use (a forked child builds its own), never at
import: a SpanBuffer when FLEETLINE_TRACE_STORE=redis (the spans kept with the job, see
trace_store), an OTLP/HTTP exporter behind a BatchSpanProcessor when
OTEL_EXPORTER_OTLP_ENDPOINT is set. With neither, the SDK is not even imported and every
span is OpenTelemetry's no-op, unless the process records metrics: those are counted from
its spans (`count_spans`, shared/metrics_spans.py). Fleetline keeps a provider of its own:
it never replaces the process's global one.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from fleetline.shared.settings import TraceSettings
    from fleetline.shared.span_buffer import SpanBuffer

# --- Attribute names (README: "Tracing") ---------------------------------------------------
# GenAI semantic conventions.
OPERATION = "gen_ai.operation.name"  # invoke_workflow | invoke_agent | execute_tool | chat
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
MAX_TOKENS = "gen_ai.request.max_tokens"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
AGENT = "gen_ai.agent.name"
TOOL = "gen_ai.tool.name"
ERROR_TYPE = "error.type"  # an outcome's error category
# Fleetline's own.
JOB_ID = "fleetline.job.id"
JOB_KIND = "fleetline.job.kind"
JOB_STEPS = "fleetline.job.steps"
JOB_CREATED = "fleetline.job.created"
TENANT = "fleetline.tenant"
STEP_ID = "fleetline.step.id"
ATTEMPT = "fleetline.step.attempt"
MODEL = "fleetline.model"  # the price table's key (gen_ai.request.model: the provider's id)
# What the span's own calls billed: summed over a job's spans, the job's cost_usd.
COST = "fleetline.cost_usd"
LATENCY = "fleetline.latency_ms"
STATUS = "fleetline.status"  # an outcome status, a job status, or retry | requeued
CACHED = "fleetline.cached"
BATCH_SIZE = "fleetline.batch_size"
ROUTED_FROM = "fleetline.routed_from"
ROUTE_REASON = "fleetline.route_reason"
BREAKER_STATE = "fleetline.breaker.state"
CALL = "fleetline.call"  # first | correction | batch | single (after a batch that did not serve)
CALL_ID = "fleetline.call_id"  # the ledger's (and the sim invoice's) id of the call
GUARD = "fleetline.guard"
VERDICT = "fleetline.verdict"  # stop | reroute | defer
WAIT_S = "fleetline.wait_s"
RATE_WAITED_S = "fleetline.rate_waited_s"
COMPLETENESS = "fleetline.completeness"
EXPECTED = "fleetline.fan_in.expected"
RECEIVED = "fleetline.fan_in.received"
FINALISED = "fleetline.fan_in.finalised"  # whether the fan-in ended the job (not the watchdog)

# Span limits: attributes are few and short (ids, names, numbers); nothing long belongs.
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_CHARS = 256


@dataclass
class _Tracing:
    """This process's tracer, with what it was built from."""

    pid: int
    key: str
    tracer: Tracer
    provider: TracerProvider | None = None
    buffer: SpanBuffer | None = None


@dataclass
class _State:
    """What this process was told to trace, and the tracer built from it."""

    settings: TraceSettings | None = None
    key: str = ""
    current: _Tracing | None = None
    exit_hook: bool = False
    # Set in a process that records metrics (shared/metrics.py): applied to each provider
    # built here, which is then built even with the trace store off and no exporter.
    counting: Callable[[TracerProvider], None] | None = None


_lock = threading.Lock()
_state = _State()


def init_tracing(settings: TraceSettings) -> None:
    """Trace this process's spans as `settings` say (built on first use, per process)."""
    with _lock:
        _state.settings, _state.key = settings, _key(settings)


def count_spans(install: Callable[[TracerProvider], None]) -> None:
    """Apply `install` to this process's provider (built anew for it), and record spans
    even when the settings trace nothing: metrics are counted from them."""
    with _lock:
        _state.counting = install
        if _state.settings is not None:
            _state.key = _key(_state.settings)


def _key(settings: TraceSettings) -> str:
    return settings.model_dump_json() + ("+metrics" if _state.counting is not None else "")


def enabled() -> bool:
    """Whether this process records spans at all (cheap: no SDK is touched)."""
    settings = _state.settings
    return settings is not None and (settings.enabled or _state.counting is not None)


def tracer() -> Tracer:
    """This process's tracer (OpenTelemetry's no-op one when tracing is off)."""
    return _process().tracer


def span_buffer() -> SpanBuffer | None:
    """Where this process holds ended spans for the trace store (None: store off)."""
    return _process().buffer if enabled() else None


def _process() -> _Tracing:
    current = _state.current
    if current is not None and current.pid == os.getpid() and current.key == _state.key:
        return current
    with _lock:
        return _rebuild()


def _rebuild() -> _Tracing:
    old = _state.current
    if old is not None and old.pid == os.getpid():
        if old.key == _state.key:
            return old
        if old.provider is not None:
            old.provider.shutdown()  # the settings changed (tests): send what it holds
    # A forked child never touches its parent's provider: its exporter thread is gone.
    _state.current = _build(_state.settings, _state.key)
    if not _state.exit_hook:
        # Prefork children end without atexit: the worker's shutdown signal calls shutdown.
        atexit.register(shutdown_tracing)
        _state.exit_hook = True
    return _state.current


def _build(settings: TraceSettings | None, key: str) -> _Tracing:
    from opentelemetry import trace

    pid = os.getpid()
    if settings is None or not (settings.enabled or _state.counting is not None):
        return _Tracing(pid, key, trace.NoOpTracer())
    # Imported here: a process with tracing off never pays for the SDK.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        span_limits=SpanLimits(
            max_attributes=MAX_ATTRIBUTES,
            max_attribute_length=MAX_ATTRIBUTE_CHARS,
            # Exception events carry messages and stack frames, which may quote data.
            max_events=0,
            max_links=0,
        ),
        shutdown_on_exit=False,
    )
    buffer = None
    if settings.store == "redis":
        from fleetline.shared.span_buffer import SpanBuffer

        buffer = SpanBuffer()
        provider.add_span_processor(buffer)
    endpoint = settings.traces_endpoint
    if endpoint is not None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    if _state.counting is not None:
        _state.counting(provider)
    return _Tracing(pid, key, provider.get_tracer("fleetline"), provider, buffer)


def shutdown_tracing() -> None:
    """Send what the exporter still holds; call before the process ends (a span made
    after it builds the tracer again)."""
    with _lock:
        current, _state.current = _state.current, None
    if current is not None and current.pid == os.getpid() and current.provider is not None:
        current.provider.shutdown()


# --- Propagation ------------------------------------------------------------------------


def headers_for(span: Span) -> dict[str, str]:
    """The Celery message headers that make a task's spans children of `span` (empty when
    the span is not recorded)."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def parent_from(headers: Mapping[str, Any] | None) -> Context | None:
    """The context a task's headers carry (None: no trace came with the message)."""
    if not headers or "traceparent" not in headers:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {k: str(v) for k, v in headers.items() if k in ("traceparent", "tracestate")}
    return TraceContextTextMapPropagator().extract(carrier)


def context_of(span: Span) -> Context:
    """A context whose current span is `span`, for its children."""
    from opentelemetry import trace

    return trace.set_span_in_context(span)
