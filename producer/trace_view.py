"""A job's trace as a waterfall: rows in tree order, offsets on the trace's time axis,
costs and tokens rolled up, failures marked. Pure: the terminal and the HTML page both
draw from it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from fleetline.shared import otel

# Where the cost of a span outside any agent's or tool's step is counted.
OTHER_AGENT = "(job)"


@dataclass(frozen=True)
class Row:
    """One span of the waterfall."""

    span: dict[str, Any]
    depth: int
    offset_s: float
    duration_s: float
    # The span's own calls' cost, and with its descendants'.
    own_cost_usd: float
    cost_usd: float
    tokens_in: int
    tokens_out: int
    agent: str
    failed: bool
    detail: str

    @property
    def name(self) -> str:
        return str(self.span["name"])

    @property
    def attributes(self) -> dict[str, Any]:
        return dict(self.span.get("attributes") or {})


@dataclass(frozen=True)
class TraceView:
    """The whole waterfall of one trace."""

    trace_id: str
    rows: list[Row]
    started_at: float
    duration_s: float
    cost_usd: float
    tokens_in: int
    tokens_out: int
    failures: int
    cost_by_agent: dict[str, float] = field(default_factory=dict)


def view(trace: dict[str, Any]) -> TraceView:
    """Lay `trace` (load_trace's shape) out as a waterfall."""
    spans: list[dict[str, Any]] = list(trace.get("spans") or [])
    ids = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for s in spans:
        parent = s.get("parent_id")
        # A span whose parent was not kept (capped, or a replayed message) is a root.
        children[parent if parent in ids else None].append(s)
    for group in children.values():
        group.sort(key=lambda s: (s["start"], -s["end"]))
    started = min((s["start"] for s in spans), default=0.0)
    ended = max((s["end"] for s in spans), default=started)

    totals: dict[str, tuple[float, int, int]] = {}

    def total(s: dict[str, Any]) -> tuple[float, int, int]:
        a = s.get("attributes") or {}
        cost, t_in, t_out = _cost(a), _int(a, otel.INPUT_TOKENS), _int(a, otel.OUTPUT_TOKENS)
        for c in children.get(s["span_id"], []):
            c_cost, c_in, c_out = total(c)
            cost, t_in, t_out = cost + c_cost, t_in + c_in, t_out + c_out
        totals[s["span_id"]] = (cost, t_in, t_out)
        return cost, t_in, t_out

    rows: list[Row] = []
    by_agent: dict[str, float] = defaultdict(float)

    def walk(s: dict[str, Any], depth: int, agent: str) -> None:
        a = s.get("attributes") or {}
        agent = str(a.get(otel.AGENT) or a.get(otel.TOOL) or agent)
        cost, t_in, t_out = totals[s["span_id"]]
        own = _cost(a)
        if otel.COST in a:
            by_agent[agent] += own
        rows.append(
            Row(
                span=s,
                depth=depth,
                offset_s=s["start"] - started,
                duration_s=max(0.0, s["end"] - s["start"]),
                own_cost_usd=own,
                cost_usd=cost,
                tokens_in=t_in,
                tokens_out=t_out,
                agent=agent,
                failed=otel.ERROR_TYPE in a,
                detail=detail(a),
            )
        )
        for c in children.get(s["span_id"], []):
            walk(c, depth + 1, agent)

    for root in children.get(None, []):
        total(root)
        walk(root, 0, OTHER_AGENT)
    return TraceView(
        trace_id=str(trace.get("trace_id", "")),
        rows=rows,
        started_at=started,
        duration_s=max(0.0, ended - started),
        cost_usd=sum(_cost(s.get("attributes") or {}) for s in spans),
        tokens_in=sum(_int(s.get("attributes") or {}, otel.INPUT_TOKENS) for s in spans),
        tokens_out=sum(_int(s.get("attributes") or {}, otel.OUTPUT_TOKENS) for s in spans),
        failures=sum(1 for r in rows if r.failed),
        cost_by_agent=dict(sorted(by_agent.items(), key=lambda kv: -kv[1])),
    )


def detail(a: dict[str, Any]) -> str:
    """A few words on what the span did: step and attempt, call kind, verdict, error."""
    parts = []
    if otel.STEP_ID in a:
        parts.append(f"{a[otel.STEP_ID]} #{a.get(otel.ATTEMPT, 1)}")
    if otel.CALL in a:
        call = str(a[otel.CALL])
        parts.append(f"{call} x{a[otel.BATCH_SIZE]}" if otel.BATCH_SIZE in a else call)
    if otel.VERDICT in a:
        parts.append(str(a[otel.VERDICT]))
    if a.get(otel.CACHED):
        parts.append("cached")
    if otel.ROUTED_FROM in a:
        parts.append(f"from {a[otel.ROUTED_FROM]} ({a.get(otel.ROUTE_REASON, '')})")
    if otel.STATUS in a:
        parts.append(str(a[otel.STATUS]))
    if otel.ERROR_TYPE in a and a[otel.ERROR_TYPE] != a.get(otel.STATUS):
        parts.append(str(a[otel.ERROR_TYPE]))
    return " · ".join(parts)


def _cost(a: dict[str, Any]) -> float:
    value = a.get(otel.COST, 0.0)
    return float(value) if isinstance(value, int | float) else 0.0


def _int(a: dict[str, Any], name: str) -> int:
    value = a.get(name, 0)
    return int(value) if isinstance(value, int | float) else 0
