"""The spans of one step attempt: the attempt, its model calls, the guard verdict that
stopped it, the waits.

The attempt's span is a child of the span its message's headers name (the job's submit
span, or the fan-in's for a then-step). A step's spans are written with its own closing
round trip (`queue_write`, from `SubtaskRun.finish`), so keeping the trace costs no round
trip of its own; what a retry or a requeue leaves is written on its way out (`close`).
With tracing off every method returns at once. No span holds a prompt, a document or a
tool's arguments: ids, names, counts, costs and categories only.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from fleetline.shared import otel, trace_store
from fleetline.shared.fleet import Agent
from fleetline.shared.models.base import ModelClient, ModelRequest, ModelResponse
from fleetline.shared.models.prices import call_cost_usd
from fleetline.shared.schemas import OutcomeStatus, SubtaskOutcome
from fleetline.shared.settings import ModelSpec

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span

    from fleetline.shared.round_trip import RoundTrip
    from fleetline.workers.gate import GateResult
    from fleetline.workers.guards import Defer, Guard, Reroute
    from fleetline.workers.run import SubtaskRun

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def guard_name(guard: object) -> str:
    """`KillSwitchGuard` -> `kill_switch`."""
    return _CAMEL.sub("_", type(guard).__name__.removesuffix("Guard")).lower()


def open_span(
    name: str, parent: Context | None, attributes: dict[str, Any], *, kind: str = "INTERNAL"
) -> Span:
    """A span of this process's tracer, under `parent`."""
    from opentelemetry.trace import SpanKind

    return otel.tracer().start_span(
        name, context=parent, kind=SpanKind[kind], attributes=attributes
    )


def end_failed(span: Span, category: str) -> None:
    """Mark a span failed with an error category (never a message: it may quote data)."""
    from opentelemetry.trace import StatusCode

    span.set_attribute(otel.ERROR_TYPE, category)
    span.set_status(StatusCode.ERROR, category)


class StepTrace:
    """The spans of one step attempt; a StepTrace() of its own is the untraced one."""

    def __init__(self, span: Span | None = None, job_id: str = "") -> None:
        self.span = span
        self.job_id = job_id
        self.trace_id = span.get_span_context().trace_id if span is not None else 0
        self._context = otel.context_of(span) if span is not None else None
        self._agent = ""
        self._ended = False
        self._queued: list[str] = []
        self._written = False

    @classmethod
    def start(cls, run: SubtaskRun, parent: Context | None) -> StepTrace:
        """The attempt's span, opened now."""
        if not otel.enabled():
            return cls()
        payload = run.payload
        name = run.worker.name
        is_agent = isinstance(run.worker, Agent)
        operation = "invoke_agent" if is_agent else "execute_tool"
        attributes: dict[str, Any] = {
            otel.OPERATION: operation,
            otel.AGENT if is_agent else otel.TOOL: name,
            otel.JOB_ID: payload.job_id,
            otel.STEP_ID: payload.subtask.id,
            otel.ATTEMPT: run.attempt.number,
        }
        if run.model:
            attributes[otel.MODEL] = run.model
        span = open_span(f"{operation} {name}", parent, attributes, kind="CONSUMER")
        trace = cls(span, payload.job_id)
        trace._agent = name if is_agent else ""
        return trace

    @property
    def context(self) -> Context | None:
        """The context of the attempt's children (None: not traced)."""
        return self._context

    # --- children -------------------------------------------------------------------

    def client(self, client: ModelClient, price: ModelSpec, first: str) -> ModelClient:
        """`client`, each call of it a `chat` span (`first`: what its first call is)."""
        if self.span is None:
            return client
        return TracedClient(client, self, price, first)

    def batch_share(
        self,
        started_ns: int,
        request: ModelRequest,
        price: ModelSpec,
        result: GateResult | None,
        size: int,
    ) -> None:
        """A span for this step's part in a batched call: from joining the batch to its
        share coming back, with that share's tokens and cost."""
        if self.span is None:
            return
        span = self.call_span(request, "batch", price.provider, started_ns)
        span.set_attribute(otel.BATCH_SIZE, size)
        if result is None:
            end_failed(span, "batch_failed")  # not answered: nothing was billed
        else:
            span.set_attributes(
                {
                    otel.RESPONSE_MODEL: result.models[0] if result.models else request.model,
                    otel.INPUT_TOKENS: result.tokens_in,
                    otel.OUTPUT_TOKENS: result.tokens_out,
                    otel.COST: result.cost_usd,
                }
            )
            if result.output is None:
                end_failed(span, "invalid_output")
        span.end()

    def guard(
        self,
        guard: Guard,
        verdict: SubtaskOutcome | Reroute | Defer,
        started_ns: int,
        run: SubtaskRun,
    ) -> None:
        """A span for the guard verdict that stopped, rerouted or deferred the attempt."""
        if self.span is None:
            return
        from fleetline.workers.guards import Defer, Reroute

        attributes: dict[str, Any] = {otel.GUARD: guard_name(guard)}
        if run.model:
            attributes[otel.MODEL] = run.model
        state = breaker_state(run)
        if state is not None and guard_name(guard) == "breaker":
            attributes[otel.BREAKER_STATE] = state
        span = otel.tracer().start_span(
            f"guard {guard_name(guard)}",
            context=self._context,
            start_time=started_ns,
            attributes=attributes,
        )
        if isinstance(verdict, Defer):
            span.set_attributes({otel.VERDICT: "defer", otel.WAIT_S: round(verdict.seconds, 3)})
            span.set_attribute(otel.ERROR_TYPE, verdict.category)
        else:
            outcome = verdict.outcome if isinstance(verdict, Reroute) else verdict
            span.set_attribute(otel.VERDICT, "reroute" if isinstance(verdict, Reroute) else "stop")
            span.set_attribute(otel.STATUS, outcome.status.value)
            if isinstance(verdict, Reroute):
                span.set_attribute(otel.ROUTE_REASON, verdict.reason)
            if outcome.error is not None:
                end_failed(span, outcome.error.category)
        span.end()

    def wait(self, started_ns: int, seconds: float, rate_window: bool) -> None:
        """A span for a wait in place (a rate window, a tenant's fair share)."""
        if self.span is None:
            return
        name = "wait rate_window" if rate_window else "wait"
        attributes = {otel.WAIT_S: round(seconds, 3)}
        otel.tracer().start_span(
            name, context=self._context, start_time=started_ns, attributes=attributes
        ).end()

    def call_span(
        self, request: ModelRequest, call: str, provider: str, started_ns: int | None = None
    ) -> Span:
        """An open `chat` span for one provider call of the attempt."""
        from opentelemetry.trace import SpanKind

        attributes: dict[str, Any] = {
            otel.OPERATION: "chat",
            otel.PROVIDER: provider,
            otel.REQUEST_MODEL: request.api_model,
            otel.MODEL: request.model,
            otel.MAX_TOKENS: request.max_output_tokens,
            otel.CALL: call,
            otel.CALL_ID: request.call_id,
        }
        if self._agent:
            attributes[otel.AGENT] = self._agent
        return otel.tracer().start_span(
            f"chat {request.api_model}",
            context=self._context,
            kind=SpanKind.CLIENT,
            start_time=started_ns,
            attributes=attributes,
        )

    # --- the end ----------------------------------------------------------------------

    def end(self, outcome: SubtaskOutcome, run: SubtaskRun) -> None:
        """Close the attempt's span with its outcome (once; a re-run trip changes nothing)."""
        span = self.span
        if span is None or self._ended:
            return
        self._ended = True
        attributes: dict[str, Any] = {
            otel.STATUS: outcome.status.value,
            otel.LATENCY: round(outcome.latency_ms, 3),
            otel.CACHED: outcome.cached,
        }
        if outcome.model:
            attributes[otel.MODEL] = outcome.model
        if outcome.batch_size:
            attributes[otel.BATCH_SIZE] = outcome.batch_size
        if outcome.routed_from:
            attributes[otel.ROUTED_FROM] = outcome.routed_from
            attributes[otel.ROUTE_REASON] = outcome.route_reason or ""
        if outcome.rate_waited_s:
            attributes[otel.RATE_WAITED_S] = round(outcome.rate_waited_s, 3)
        state = breaker_state(run)
        if state is not None:
            attributes[otel.BREAKER_STATE] = state
        span.set_attributes(attributes)
        if outcome.status is not OutcomeStatus.OK and outcome.error is not None:
            end_failed(span, outcome.error.category)
        span.end()

    def queue_write(self, trip: RoundTrip, run: SubtaskRun) -> None:
        """Queue the write of the spans this process holds of the job's trace."""
        buffer = otel.span_buffer()
        if self.span is None or buffer is None:
            return
        spans = buffer.pending(self.trace_id)
        if spans:
            settings = run.runtime.settings
            trace_store.queue_spans(
                trip,
                self.job_id,
                spans,
                settings.limits.finished_ttl_s,
                settings.trace.max_spans,
            )
        self._queued = list(spans)

    def written(self) -> None:
        """The queued write went through: forget those spans."""
        buffer = otel.span_buffer()
        if buffer is not None and self._queued:
            buffer.discard(self.trace_id, self._queued)
        self._queued = []
        self._written = self.span is not None

    def close(self, run: SubtaskRun) -> None:
        """On the way out of the task: an attempt that recorded nothing (a retry, a
        requeue) ends as such, and whatever is still held is written."""
        span = self.span
        if span is None:
            return
        if not self._ended:
            self._ended = True
            error = run.call_error
            span.set_attribute(otel.STATUS, "retry" if error is not None else "requeued")
            if error is not None:
                end_failed(span, str(getattr(error, "category", "internal")))
            span.end()
        if self._written:
            return  # written with the closing round trip (another step's spans go with theirs)
        settings = run.runtime.settings
        trace_store.write_pending(
            run.runtime.redis,
            self.job_id,
            self.trace_id,
            settings.limits.finished_ttl_s,
            settings.trace.max_spans,
        )


class TracedClient:
    """A model client whose every call is a `chat` span with its usage and cost."""

    def __init__(self, client: ModelClient, trace: StepTrace, price: ModelSpec, first: str):
        self._client = client
        self._trace = trace
        self._price = price
        self._first = first

    def complete(self, request: ModelRequest) -> ModelResponse:
        call = "correction" if request.correction else self._first
        span = self._trace.call_span(request, call, self._price.provider)
        try:
            response = self._client.complete(request)
        except BaseException as exc:
            end_failed(span, str(getattr(exc, "category", type(exc).__name__)))
            span.end()
            raise
        span.set_attributes(
            {
                otel.RESPONSE_MODEL: response.model,
                otel.INPUT_TOKENS: response.tokens_in,
                otel.OUTPUT_TOKENS: response.tokens_out,
                # As the run's spend bills it: the same price row and token counts.
                otel.COST: call_cost_usd(self._price, response.tokens_in, response.tokens_out),
                otel.LATENCY: round(response.latency_ms, 3),
            }
        )
        span.end()
        return response


def breaker_state(run: SubtaskRun) -> str | None:
    """The state the run's breaker guard saw for its current model, if it checked."""
    from fleetline.workers.guards import BreakerGuard

    for guard in run.guards:
        if isinstance(guard, BreakerGuard) and guard.permit is not None:
            return guard.permit.state.value
    return None


def now_ns() -> int:
    """A span timestamp (what the SDK uses: Unix nanoseconds)."""
    return time.time_ns()
