"""How the CLI shows a job: rich tables for people, the models' own JSON for programs.

Results go to stdout; progress, notices and errors go to stderr, so `--json` output can be
piped as it is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from fleetline.shared.schemas import JobResult, JobStatus, OutcomeStatus, SubtaskOutcome
from fleetline.shared.state import AuditEntry

# Both resolve sys.stdout/sys.stderr when they write, so test runners can capture them.
out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
# Piped output (CI logs, `make demo | tee`) gets this width instead of rich's 80 columns,
# which would cut the subtask table's columns to a few letters each.
PIPED_WIDTH = 140

STATUS_STYLE: dict[str, str] = {
    JobStatus.SUCCEEDED: "bold green",
    JobStatus.DEGRADED: "bold yellow",
    JobStatus.PENDING: "cyan",
    JobStatus.RUNNING: "cyan",
    OutcomeStatus.OK: "green",
    OutcomeStatus.SKIPPED: "yellow",
}


def styled(status: str) -> Text:
    """A status word in its colour (red for anything that went wrong)."""
    return Text(status, style=STATUS_STYLE.get(status, "bold red"))


def usd(value: float) -> str:
    # Sim and cheap-tier calls cost fractions of a cent; six places keep them readable.
    return f"${value:,.6f}"


def error(message: str) -> None:
    """An error line on stderr; the message is shown literally (no rich markup)."""
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def notice(message: str) -> None:
    """A progress or information line on stderr (rich markup allowed)."""
    err.print(message, soft_wrap=True)


def print_json(text: str) -> None:
    """Machine-readable output: exactly the text, nothing wrapped or styled."""
    out.file.write(text + "\n")
    out.file.flush()


def audit_json(entries: Iterable[AuditEntry]) -> str:
    return json.dumps([asdict(e) for e in entries])


def summary(job: JobResult) -> Table:
    """The job at a glance: status, completeness, cost and timing."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("job", job.job_id)
    grid.add_row("kind / tenant", f"{job.kind} / {job.tenant}")
    grid.add_row("status", styled(job.status.value))
    grid.add_row("completeness", f"{job.completeness:.0%}")
    grid.add_row("cost", usd(job.cost_usd))
    ok = sum(1 for o in job.subtasks if o.status is OutcomeStatus.OK)
    grid.add_row("subtasks", f"{ok} ok of {len(job.subtasks)} recorded")
    if job.finished_at:
        grid.add_row("took", f"{job.finished_at - job.created_at:.2f} s")
    elif job.deadline_at:
        grid.add_row("deadline", _clock(job.deadline_at))
    grid.add_row("version", str(job.version))
    return grid


def answer(job: JobResult) -> RenderableType:
    """The then-step's answer (text as paragraphs, lists as bullets), or a note that there
    is none, and which steps are missing or unusable."""
    result: dict[str, Any] = job.result or {}
    parts: list[RenderableType] = []
    found = result.get("answer")
    if isinstance(found, dict) and found:
        for key, value in found.items():
            if isinstance(value, list):
                parts.append(Text(key.replace("_", " ").capitalize(), style="bold"))
                parts.extend(Text(f"• {_plain(v)}") for v in value)
            else:
                parts.append(Text(_plain(value)))
            parts.append(Text(""))
    else:
        parts.append(Text("No answer was written.", style="italic yellow"))
    for key in ("missing", "unusable"):
        if result.get(key):
            parts.append(Text(f"{key}: {', '.join(map(str, result[key]))}", style="yellow"))
    if "error" in result:
        parts.append(Text(f"error: {result['error']}", style="red"))
    return Panel(Group(*parts), title="Answer", title_align="left", width=min(out.width, 100))


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def subtask_table(outcomes: list[SubtaskOutcome]) -> Table:
    """One row per subtask: who ran it, on which model, at what cost and how it ended."""
    fit_width()
    table = Table(title="Steps", title_justify="left")
    for name in ("step", "agent", "model"):
        table.add_column(name)
    for name in ("tokens in", "tokens out", "cost", "latency"):
        table.add_column(name, justify="right")
    table.add_column("status")
    table.add_column("attempts", justify="right")
    table.add_column("cached")
    for o in outcomes:
        status = styled(o.status.value)
        if o.error:
            status.append(f" ({o.error.category})", style="dim")
        table.add_row(
            o.subtask_id,
            o.worker_type,
            o.model or "-",
            str(o.tokens_in),
            str(o.tokens_out),
            usd(o.cost_usd),
            f"{o.latency_ms:,.0f} ms",
            status,
            str(o.attempts),
            "yes" if o.cached else "",
        )
    return table


def fit_width() -> None:
    """Widen the output when it is not a terminal (a terminal's own width is kept)."""
    if not out.is_terminal and out.width < PIPED_WIDTH:
        out.width = PIPED_WIDTH


def show_result(job: JobResult) -> None:
    """The whole result: summary, answer, per-step table and totals."""
    from fleetline.producer.cli_render_patterns import pattern_tables

    fit_width()
    out.print(summary(job))
    out.print(answer(job))
    # A pipeline's stages or a debate's rounds.
    for part in pattern_tables(job):
        out.print(part)
    out.print(subtask_table(job.subtasks))
    out.print(
        Text.assemble(
            ("Total cost ", "bold"),
            usd(job.cost_usd),
            ("   completeness ", "bold"),
            f"{job.completeness:.0%}",
            ("   status ", "bold"),
            styled(job.status.value),
        )
    )


def audit_table(entries: list[AuditEntry]) -> Table:
    """The trace: every state change of the job, oldest first."""
    fit_width()
    table = Table(title="Audit trail", title_justify="left")
    table.add_column("time")
    table.add_column("+s", justify="right")
    table.add_column("actor")
    table.add_column("action")
    table.add_column("version", justify="right")
    table.add_column("details")
    start = _at(entries[0]) if entries else None
    for e in entries:
        at = _at(e)
        offset = f"{at - start:.3f}" if at is not None and start is not None else ""
        table.add_row(
            _clock(at) if at is not None else e.id,
            offset,
            e.actor,
            e.action,
            str(e.version),
            Text(_details(e.fields)),
        )
    return table


def _at(entry: AuditEntry) -> float | None:
    """When the change happened: its `at` field, else the stream id's milliseconds."""
    try:
        return float(entry.fields["at"])
    except (KeyError, ValueError):
        try:
            return int(entry.id.split("-")[0]) / 1000
        except ValueError:
            return None


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S.%f")[:-3]


def _money(value: str) -> str:
    try:
        return usd(float(value))
    except ValueError:
        return value


def _details(fields: dict[str, str]) -> str:
    pairs: list[tuple[str, str]] = []
    for key, value in fields.items():
        if key == "at":
            continue
        if key == "changes":
            try:
                changes = json.loads(value)
            except ValueError:
                changes = None
            if isinstance(changes, dict):
                pairs += [(str(k), str(v)) for k, v in changes.items()]
                continue
        pairs.append((key, _money(value) if key.endswith("cost_usd") else value))
    return " ".join(f"{k}={v}" for k, v in pairs)
