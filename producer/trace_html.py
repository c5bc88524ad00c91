"""`fleetline trace JOB --html FILE`: one self-contained page of a job's trace.

The waterfall, the cost by agent and the job's outcome, in inline CSS and SVG: the page
fetches nothing (its Content-Security-Policy forbids it), so it can be mailed, attached to
a ticket or opened offline.
"""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import Any

from fleetline.producer.trace_view import Row, TraceView, view
from fleetline.shared.schemas import JobResult

_CSS = """
:root { --ok: #2e7d32; --bad: #c62828; --bar: #1e88e5; --paid: #43a047; --muted: #6b7280; }
* { box-sizing: border-box; }
body { font: 13px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
  color: #111827; background: #fff; }
h1 { font-size: 18px; margin: 0 0 4px; } h2 { font-size: 15px; margin: 24px 0 8px; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
.status { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff;
  font-weight: 600; background: var(--bad); }
.status.succeeded { background: var(--ok); } .status.degraded { background: #f9a825; }
.status.running, .status.pending { background: var(--bar); }
table.facts td { padding: 2px 16px 2px 0; } table.facts td:first-child { color: var(--muted); }
.waterfall { border: 1px solid #e5e7eb; border-radius: 6px; overflow: hidden; }
.span-row, .axis { display: grid; grid-template-columns: 340px 1fr 70px 100px 96px;
  align-items: center; border-top: 1px solid #f3f4f6; min-height: 22px; }
.axis { border-top: 0; background: #f9fafb; color: var(--muted); font-size: 11px; }
.span-row:hover { background: #f9fafb; }
.name { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; padding: 0 8px; }
.detail { color: var(--muted); margin-left: 6px; font-size: 11px; }
.failed .name { color: var(--bad); font-weight: 600; }
.failed .name::before { content: "\\2717 "; }
.track { position: relative; height: 14px; margin: 0 8px; background: #f3f4f6; }
.bar { position: absolute; top: 0; bottom: 0; min-width: 2px; background: var(--bar);
  border-radius: 2px; }
.paid .bar { background: var(--paid); } .failed .bar { background: var(--bad); }
.num { text-align: right; padding-right: 8px; font-variant-numeric: tabular-nums; }
.ticks { position: relative; height: 16px; margin: 0 8px; }
.ticks span { position: absolute; transform: translateX(-50%); white-space: nowrap; }
.ticks span:first-child { transform: none; }
.ticks span:last-child { transform: translateX(-100%); }
svg text { font: 12px system-ui, sans-serif; }
.top { display: flex; flex-wrap: wrap; gap: 48px; align-items: flex-start; }
.top h2 { margin-top: 2px; }
"""


def render_html(trace: dict[str, Any], job: JobResult) -> str:
    """The page of `trace` (load_trace's shape) for `job`."""
    laid = view(trace)
    title = f"Fleetline trace · {job.kind} · {job.job_id}"
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            # Nothing is fetched: no script, style sheet, font or image from anywhere.
            '<meta http-equiv="Content-Security-Policy" '
            "content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">",
            f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
            f'<div class="top">{outcome_section(laid, job)}{cost_section(laid)}</div>',
            waterfall_section(laid),
            "</body></html>",
        ]
    )


def outcome_section(laid: TraceView, job: JobResult) -> str:
    """The job's outcome: status, completeness, cost, steps by status."""
    steps = Counter(o.status.value for o in job.subtasks)
    by_status = ", ".join(f"{n} {status}" for status, n in sorted(steps.items())) or "none"
    facts = [
        ("status", f'<span class="status {escape(job.status.value)}" id="job-status">'
         f"{escape(job.status.value)}</span>"),
        ("kind", escape(job.kind)),
        ("completeness", f"{job.completeness:.0%}"),
        ("cost", f'<span id="job-cost">{_usd(job.cost_usd)}</span>'),
        ("steps recorded", escape(by_status)),
        ("spans", f"{len(laid.rows)} ({laid.failures} marked failed)"),
        ("tokens in / out", f"{laid.tokens_in:,} / {laid.tokens_out:,}"),
        ("duration", f"{laid.duration_s * 1000:,.1f} ms"),
        ("trace id", f"<code>{escape(laid.trace_id)}</code>"),
    ]  # fmt: skip
    rows = "".join(f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in facts)
    return (
        f'<section id="outcome"><h1>Job <code>{escape(job.job_id)}</code></h1>'
        f'<table class="facts">{rows}</table></section>'
    )


def waterfall_section(laid: TraceView) -> str:
    """One row per span, its bar placed on the trace's time axis."""
    total = laid.duration_s
    ticks = "".join(
        f'<span style="left:{f * 100:.0f}%">{total * f * 1000:,.0f} ms</span>'
        for f in (0, 0.25, 0.5, 0.75, 1)
    )
    rows = [
        '<div class="axis"><div class="name">span</div>'
        f'<div class="ticks">{ticks}</div><div class="num">ms</div>'
        '<div class="num">tokens</div><div class="num">cost</div></div>'
    ]
    rows += [_row(r, total) for r in laid.rows]
    return (
        '<section><h2>Waterfall</h2><div class="waterfall" id="waterfall">'
        + "".join(rows)
        + "</div></section>"
    )


def _row(row: Row, total_s: float) -> str:
    left = row.offset_s / total_s * 100 if total_s > 0 else 0.0
    width = row.duration_s / total_s * 100 if total_s > 0 else 100.0
    classes = "span-row" + (" failed" if row.failed else "") + (" paid" if row.own_cost_usd else "")
    tokens = f"{row.tokens_in:,}/{row.tokens_out:,}" if row.tokens_in or row.tokens_out else ""
    tip = escape(f"{row.name} · {row.duration_s * 1000:,.1f} ms · {row.detail}")
    return (
        f'<div class="{classes}" data-span-id="{escape(str(row.span["span_id"]))}" '
        f'data-agent="{escape(row.agent)}" data-cost="{row.cost_usd!r}" title="{tip}">'
        f'<div class="name" style="padding-left:{8 + 16 * row.depth}px">{escape(row.name)}'
        f'<span class="detail">{escape(row.detail)}</span></div>'
        f'<div class="track"><div class="bar" style="left:{left:.3f}%;'
        f'width:{min(width, 100 - left):.3f}%"></div></div>'
        f'<div class="num">{row.duration_s * 1000:,.1f}</div><div class="num">{tokens}</div>'
        f'<div class="num">{_usd(row.cost_usd) if row.cost_usd else ""}</div></div>'
    )


def cost_section(laid: TraceView) -> str:
    """Where the money went: an SVG bar per agent, largest first."""
    agents = list(laid.cost_by_agent.items())
    if not agents:
        return (
            '<section id="cost-by-agent"><h2>Cost by agent</h2>'
            "<p>No call cost anything.</p></section>"
        )
    top = max(c for _, c in agents) or 1.0
    bar_w, row_h = 420, 24
    bars = []
    for i, (agent, cost) in enumerate(agents):
        y = i * row_h
        width = max(1.0, cost / top * bar_w)
        share = cost / laid.cost_usd if laid.cost_usd else 0.0
        bars.append(
            f'<g class="agent-cost" data-agent="{escape(agent)}">'
            f'<text x="0" y="{y + 16}">{escape(agent)}</text>'
            f'<rect x="140" y="{y + 4}" width="{width:.1f}" height="16" rx="2" fill="#43a047"/>'
            f'<text x="{148 + width:.1f}" y="{y + 16}">{_usd(cost)} ({share:.0%})</text></g>'
        )
    height = len(agents) * row_h + 4
    return (
        '<section id="cost-by-agent"><h2>Cost by agent</h2>'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{140 + bar_w + 160}" '
        f'height="{height}" role="img" aria-label="cost by agent">{"".join(bars)}</svg>'
        f"<p>Total of the spans: {_usd(laid.cost_usd)}</p></section>"
    )


def _usd(value: float) -> str:
    return f"${value:,.6f}"
