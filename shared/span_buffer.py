"""The span processor behind the trace store: ended spans, encoded, held by trace.

on_end only encodes and files a span; nothing touches Redis here. The step that made the
spans writes them with its own closing round trip (trace_store.queue_spans) and then
discards them, so keeping a job's trace costs no round trip of its own.
"""

from __future__ import annotations

import threading

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from fleetline.shared.trace_store import encode

# Spans held at most per process: a safety net for spans no step writes (their trace's
# oldest go first); a step writes its own long before.
MAX_BUFFERED = 20_000


class SpanBuffer(SpanProcessor):
    """Each trace's ended spans, by span id, until a step writes and discards them."""

    def __init__(self, max_buffered: int = MAX_BUFFERED) -> None:
        self._max = max_buffered
        self._lock = threading.Lock()
        self._traces: dict[int, dict[str, str]] = {}
        self._count = 0

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None:
            return
        span_id, value = encode(span)
        with self._lock:
            held = self._traces.setdefault(context.trace_id, {})
            if span_id not in held:
                self._count += 1
            held[span_id] = value
            while self._count > self._max:
                oldest = next(iter(self._traces))
                self._count -= len(self._traces.pop(oldest))

    def pending(self, trace_id: int) -> dict[str, str]:
        """The spans of `trace_id` not written yet (a copy: they stay held)."""
        with self._lock:
            return dict(self._traces.get(trace_id, {}))

    def discard(self, trace_id: int, span_ids: list[str]) -> None:
        """Forget spans that were written."""
        with self._lock:
            held = self._traces.get(trace_id)
            if held is None:
                return
            for span_id in span_ids:
                if held.pop(span_id, None) is not None:
                    self._count -= 1
            if not held:
                del self._traces[trace_id]
