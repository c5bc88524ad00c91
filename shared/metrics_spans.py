"""Metrics counted from spans: each step attempt, model call and its usage, as it ends.

`install` is what shared/otel.py does to each tracer provider it builds while metrics are
on: this processor is added, and the sampler wrapped so that a span the sampler drops (a
trace sampled out upstream, OTEL_TRACES_SAMPLER) is still recorded, though never
exported: metrics count every span, whatever is sampled.

A redelivered step whose outcome was already recorded (the `recorded` guard answers it)
counts nothing: its outcome and its duration were counted the first time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

from fleetline.shared import metrics, otel

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Link, SpanKind
    from opentelemetry.trace.span import TraceState
    from opentelemetry.util.types import Attributes

STEP_OPERATIONS = frozenset({"invoke_agent", "execute_tool"})
# Steps answered by the `recorded` guard, remembered until their own span ends (it ends
# right after, in the same thread); the bound only guards against a span never ended.
_MAX_ANSWERED = 4096


def install(provider: TracerProvider) -> None:
    """Make `provider` record every span and count what ends (see the module docstring)."""
    provider.sampler = RecordingSampler(provider.sampler)
    provider.add_span_processor(MetricsSpanProcessor())


class RecordingSampler(Sampler):
    """`inner`'s decisions, except that a dropped span is recorded (not sampled)."""

    def __init__(self, inner: Sampler) -> None:
        self._inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        found = self._inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if found.decision is Decision.DROP:
            # The span's own attributes go with it: the SDK takes them from this result.
            return SamplingResult(Decision.RECORD_ONLY, attributes, found.trace_state)
        return found

    def get_description(self) -> str:
        return f"Recording{{{self._inner.get_description()}}}"


class MetricsSpanProcessor(SpanProcessor):
    """Counts step attempts (running, duration, outcome) and model calls (tokens, cost)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answered: OrderedDict[int, None] = OrderedDict()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attributes = span.attributes or {}
        if attributes.get(otel.OPERATION) in STEP_OPERATIONS:
            metrics.step_started(_worker(attributes))

    def on_end(self, span: ReadableSpan) -> None:
        attributes = span.attributes or {}
        operation = attributes.get(otel.OPERATION)
        if operation in STEP_OPERATIONS:
            self._step(span, attributes)
        elif operation == "chat" and otel.COST in attributes:
            metrics.call_billed(
                str(attributes.get(otel.AGENT, "")),
                str(attributes.get(otel.MODEL, "")),
                _int(attributes.get(otel.INPUT_TOKENS)),
                _int(attributes.get(otel.OUTPUT_TOKENS)),
                _float(attributes.get(otel.COST)),
            )
        elif attributes.get(otel.GUARD) == "recorded" and span.parent is not None:
            with self._lock:
                self._answered[span.parent.span_id] = None
                while len(self._answered) > _MAX_ANSWERED:
                    self._answered.popitem(last=False)

    def _step(self, span: ReadableSpan, attributes: Mapping[str, Any]) -> None:
        agent = _worker(attributes)
        metrics.step_started(agent, -1)
        context = span.context
        with self._lock:
            if context is not None and context.span_id in self._answered:
                del self._answered[context.span_id]
                return
        if span.start_time is None or span.end_time is None:
            return
        category = attributes.get(otel.ERROR_TYPE)
        metrics.step_ended(
            agent,
            str(attributes.get(otel.STATUS, "")),
            str(category) if category is not None else None,
            (span.end_time - span.start_time) / 1e9,
        )


def _worker(attributes: Mapping[str, Any]) -> str:
    return str(attributes.get(otel.AGENT) or attributes.get(otel.TOOL) or "")


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _float(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
