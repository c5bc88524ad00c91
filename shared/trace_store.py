"""The trace store: each job's spans kept in Redis beside its record, with its lifetime.

A span is kept as one field of the job's trace hash (`keys.job_trace`): its span id, and
compact JSON of its parent, name, start and end (microseconds) and attributes, whose
names are shortened by a fixed table. Writes go through `trace_append.lua`, which keeps
at most FLEETLINE_TRACE_MAX_SPANS per job, writes nothing once the job is gone, and gives
the hash the record's TTL. `load_trace` reads a job's trace back in the shape
`fleetline trace --json` prints and `GET /v1/jobs/{id}/trace` serves.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import redis

from fleetline.shared import keys, otel
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.scripts import load_script

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

log = logging.getLogger(__name__)

# Stored names of the attributes Fleetline writes. Stored data depends on them: add new
# codes, never change one. Other names are stored as they are (codes have no dot).
_SHORT = {
    otel.OPERATION: "op",
    otel.PROVIDER: "pv",
    otel.REQUEST_MODEL: "rq",
    otel.RESPONSE_MODEL: "rs",
    otel.MAX_TOKENS: "mx",
    otel.INPUT_TOKENS: "ti",
    otel.OUTPUT_TOKENS: "to",
    otel.AGENT: "ag",
    otel.TOOL: "tl",
    otel.ERROR_TYPE: "er",
    otel.JOB_ID: "jb",
    otel.JOB_KIND: "jk",
    otel.JOB_STEPS: "js",
    otel.JOB_CREATED: "jc",
    otel.TENANT: "tn",
    otel.STEP_ID: "si",
    otel.ATTEMPT: "at",
    otel.MODEL: "md",
    otel.COST: "usd",
    otel.LATENCY: "ms",
    otel.STATUS: "st",
    otel.CACHED: "ch",
    otel.BATCH_SIZE: "bs",
    otel.ROUTED_FROM: "rf",
    otel.ROUTE_REASON: "rr",
    otel.BREAKER_STATE: "br",
    otel.CALL: "cl",
    otel.CALL_ID: "ci",
    otel.GUARD: "gd",
    otel.VERDICT: "vd",
    otel.WAIT_S: "ws",
    otel.RATE_WAITED_S: "rw",
    otel.COMPLETENESS: "cp",
    otel.EXPECTED: "ex",
    otel.RECEIVED: "rc",
    otel.FINALISED: "fz",
}
_LONG = {short: name for name, short in _SHORT.items()}


def encode(span: ReadableSpan) -> tuple[str, str]:
    """A span as its field in the trace hash: (span id, compact JSON)."""
    context = span.context
    assert context is not None  # an ended SDK span always has one
    parent = span.parent
    start = span.start_time or 0
    value = {
        "t": format(context.trace_id, "032x"),
        "p": format(parent.span_id, "016x") if parent is not None else None,
        "n": span.name,
        "s": start // 1000,
        "e": (span.end_time or start) // 1000,
        "a": {
            _SHORT.get(name, name): list(v) if isinstance(v, tuple) else v
            for name, v in (span.attributes or {}).items()
        },
    }
    return format(context.span_id, "016x"), json.dumps(value, separators=(",", ":"))


def decode(span_id: str, value: str) -> dict[str, Any]:
    """A stored span in the public shape, with its trace id under `trace_id`."""
    data = json.loads(value)
    return {
        "span_id": span_id,
        "parent_id": data.get("p"),
        "name": data.get("n", ""),
        "start": data.get("s", 0) / 1e6,
        "end": data.get("e", 0) / 1e6,
        "attributes": {_LONG.get(k, k): v for k, v in (data.get("a") or {}).items()},
        "trace_id": data.get("t", ""),
    }


def queue_spans(
    trip: RoundTrip,
    job_id: str,
    spans: dict[str, str],
    finished_ttl_s: int,
    max_spans: int,
) -> int:
    """Queue the write of encoded spans (span id -> JSON) on a trip; its reply is how
    many were kept, -1 when the job is gone."""
    args: list[Any] = [time.time(), finished_ttl_s, max_spans]
    for span_id, value in spans.items():
        args += [span_id, value]
    return trip.script(
        load_script(trip, "trace_append"), [keys.job(job_id), keys.job_trace(job_id)], args
    )


def write_pending(
    client: redis.Redis, job_id: str, trace_id: int, finished_ttl_s: int, max_spans: int
) -> None:
    """Write what this process holds of a trace, in a round trip of its own.

    Never raises: a trace is worth less than the job it describes. Spans that could not
    be written stay held for the trace's next write.
    """
    buffer = otel.span_buffer()
    spans = buffer.pending(trace_id) if buffer is not None else {}
    if buffer is None or not spans:
        return
    try:
        trip = RoundTrip(client)
        queue_spans(trip, job_id, spans, finished_ttl_s, max_spans)
        trip.execute()
    except Exception as exc:
        log.warning("could not keep %d spans of job %s: %s", len(spans), job_id, exc)
        return
    buffer.discard(trace_id, list(spans))


def load_trace(client: redis.Redis, job_id: str) -> dict[str, Any] | None:
    """A job's trace, or None when none is kept (tracing off, expired, unknown job).

    Returns {"trace_id": hex, "spans": [{"span_id", "parent_id", "name", "start", "end",
    "attributes"}]}, spans by start time; times in Unix seconds; `parent_id` None for
    the root (the submit span).
    """
    raw = client.hgetall(keys.job_trace(job_id))
    spans = []
    for key, value in raw.items():
        try:
            spans.append(decode(_text(key), _text(value)))
        except (ValueError, TypeError, AttributeError):
            log.warning("job %s: a stored span is not JSON; left out", job_id)
    if not spans:
        return None
    spans.sort(key=lambda s: (s["start"], -s["end"]))
    root = next((s for s in spans if s["parent_id"] is None), spans[0])
    trace_id = root["trace_id"]
    for span in spans:
        del span["trace_id"]
    return {"trace_id": trace_id, "spans": spans}


def root_context(client: redis.Redis, job_id: str) -> dict[str, str]:
    """The W3C headers (`traceparent`) that make a span a child of the job's submit span,
    as the job's messages carry them; {} when no trace of the job is kept. A resumed run
    continues its job's trace with them."""
    trace = load_trace(client, job_id)
    root = next((s for s in trace["spans"] if s["parent_id"] is None), None) if trace else None
    if trace is None or root is None:
        return {}
    return {"traceparent": f"00-{trace['trace_id']}-{root['span_id']}-01"}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
