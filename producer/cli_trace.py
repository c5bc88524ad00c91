"""`fleetline trace JOB`: a job's spans as a waterfall, as JSON, or as one HTML page.

The spans are those every process kept with the job in Redis (FLEETLINE_TRACE_STORE);
no tracing backend is needed. Exit codes as for the rest of the CLI: 1 when no trace is
kept for the job, 2 an unknown job, 4 Redis unavailable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from fleetline.producer import cli_render as render
from fleetline.producer.cli_jobs import AppOption, Exit, cli_settings, exit_codes, open_store
from fleetline.producer.trace_html import render_html
from fleetline.producer.trace_view import Row, TraceView, view
from fleetline.shared.schemas import JobResult
from fleetline.shared.trace_store import load_trace

# Columns of the timeline bar in the terminal.
BAR_WIDTH = 40


def trace(
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="The job id submit printed.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the spans as JSON instead of a waterfall.")
    ] = False,
    html: Annotated[
        Path | None,
        typer.Option("--html", metavar="FILE", help="Write the trace as one HTML page."),
    ] = None,
    app_ref: AppOption = None,
) -> None:
    """A job's trace: one row per span on a time axis, with cost, tokens and failures."""
    with exit_codes():
        store = open_store(cli_settings(app_ref))
        job = store.get(job_id)  # JobNotFound (exit 2) for an unknown id
        found = load_trace(store.client, job_id)
    if found is None:
        render.error(f"no trace is kept for job {job_id} (FLEETLINE_TRACE_STORE=off where it ran?)")
        raise typer.Exit(Exit.FAILED)
    if html is not None:
        html.write_text(render_html(found, job), encoding="utf-8")
        render.notice(f"wrote {html}")
    if as_json:
        render.print_json(json.dumps(found))
    elif html is None:
        render.fit_width()
        render.out.print(waterfall(view(found), job))


def waterfall(trace: TraceView, job: JobResult) -> Table:
    """The terminal waterfall: one row per span, its bar on the trace's time axis."""
    total_ms = trace.duration_s * 1000
    title = (
        f"job {job.job_id} ({job.kind}): {job.status.value}, {render.usd(job.cost_usd)}, "
        f"{len(trace.rows)} spans, {total_ms:,.0f} ms"
    )
    table = Table(title=title, title_justify="left", show_lines=False, expand=False)
    table.add_column("span", no_wrap=True, overflow="ellipsis", max_width=48)
    table.add_column(f"0 {'─' * (BAR_WIDTH - 10)} {total_ms:,.0f} ms", no_wrap=True)
    table.add_column("ms", justify="right")
    table.add_column("tokens in/out", justify="right")
    table.add_column("cost", justify="right")
    table.add_column("", no_wrap=True, overflow="ellipsis", max_width=44)
    for row in trace.rows:
        table.add_row(
            Text("  " * row.depth + row.name, style="bold red" if row.failed else ""),
            bar(row, trace.duration_s),
            f"{row.duration_s * 1000:,.1f}",
            f"{row.tokens_in:,}/{row.tokens_out:,}" if row.tokens_in or row.tokens_out else "",
            render.usd(row.cost_usd) if row.cost_usd else "",
            Text(("✗ " if row.failed else "") + row.detail, style="red" if row.failed else "dim"),
        )
    agents = ", ".join(f"{a} {render.usd(c)}" for a, c in trace.cost_by_agent.items())
    table.caption = f"cost by agent: {agents or 'none'}; trace {trace.trace_id}"
    table.caption_justify = "left"
    return table


def bar(row: Row, total_s: float) -> Text:
    """The span's bar: blank up to its start, then at least one block to its end."""
    if total_s <= 0:
        return Text("█", style="cyan")
    start = min(BAR_WIDTH - 1, int(row.offset_s / total_s * BAR_WIDTH))
    length = max(1, round(row.duration_s / total_s * BAR_WIDTH))
    length = min(length, BAR_WIDTH - start)
    style = "red" if row.failed else ("green" if row.own_cost_usd else "cyan")
    return Text(" " * start) + Text("█" * length, style=style)


def register(app: typer.Typer) -> None:
    """Add `fleetline trace` to the `fleetline` app."""
    app.command(name="trace")(trace)
