"""`fleetline scheduled run NAME`: run a configured schedule now, with a progress bar.

Exit codes: 0 every job succeeded or degraded; 1 a job failed or did not finish, or a
line or file was skipped; 2 an unknown NAME (the known ones are listed) or bad settings;
3 a kill switch refused the run's jobs; 4 Redis unavailable.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fleetline.producer import cli_render as render
from fleetline.producer.cli_jobs import AppOption, Exit, cli_settings, exit_codes
from fleetline.producer.scheduled_runs import RunSummary, run_scheduled
from fleetline.producer.submit import Producer
from fleetline.shared.scheduled import get_run

schedule_app = typer.Typer(
    name="schedule", help="Scheduled runs (FLEETLINE_SCHEDULE_RUNS).", no_args_is_help=True
)


@schedule_app.command("run")
def scheduled_run(
    name: Annotated[str, typer.Argument(metavar="NAME", help="A run of FLEETLINE_SCHEDULE_RUNS.")],
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run-id",
            help="Run under this id (default: the current cron slot, which a second run "
            "of the same slot shares, so it submits nothing new).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    app_ref: AppOption = None,
) -> None:
    """Run a configured batch now and wait for its jobs."""
    with exit_codes():
        settings = cli_settings(app_ref)
        get_run(settings, name)  # an unknown name is refused before Redis is needed
        producer = Producer.from_settings(settings)
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("jobs"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=render.err) as bar:
            task = bar.add_task(f"batch {name}", total=None)

            def progress(finished: int, total: int) -> None:
                bar.update(task, completed=finished, total=total)

            summary = run_scheduled(
                name, settings, producer, producer.store, progress, run_id=run_id
            )
        producer.app.close()
    if as_json:
        render.print_json(summary.model_dump_json())
    else:
        render.out.print(summary_table(summary))
    if summary.jobs and not summary.submitted:
        render.notice(
            f"run {summary.run_id} had already submitted its jobs; pass --run-id to run again"
        )
    if summary.refused:
        raise typer.Exit(Exit.KILLED)
    raise typer.Exit(Exit.OK if summary.ok else Exit.FAILED)


def summary_table(summary: RunSummary) -> Table:
    """The run at a glance, and every line or file that was skipped."""
    render.fit_width()
    grid = Table(title=f"Batch {summary.name}, run {summary.run_id}", title_justify="left")
    grid.add_column("jobs", justify="right")
    for name in ("submitted", "reused", "succeeded", "degraded", "failed", "unfinished"):
        grid.add_column(name, justify="right")
    grid.add_column("cost", justify="right")
    grid.add_row(
        str(summary.jobs),
        str(summary.submitted),
        str(summary.reused),
        str(summary.succeeded),
        str(summary.degraded),
        str(summary.failed),
        str(summary.unfinished),
        render.usd(summary.cost_usd),
    )
    if summary.skipped:
        grid.caption = "\n".join(
            "skipped " + (f"line {s.line}" if s.line else s.file or "job") + f": {escape(s.reason)}"
            for s in summary.skipped
        )
        grid.caption_justify = "left"
        grid.caption_style = "yellow"
    return grid
