"""The CLI of the pipeline pattern: `fleetline resume JOB` and `fleetline diff JOB`."""

from __future__ import annotations

import getpass
import json
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from fleetline.producer import cli_render as render
from fleetline.producer.cli_jobs import (
    AppOption,
    Exit,
    cli_settings,
    exit_code,
    exit_codes,
    open_store,
    watch,
)
from fleetline.producer.resume import resume_job
from fleetline.producer.run_diff import run_diff
from fleetline.producer.submit import Producer

JobArg = Annotated[str, typer.Argument(metavar="JOB", help="The pipeline job's id.")]


def resume(
    job_id: JobArg,
    from_stage: Annotated[
        str | None,
        typer.Option(
            "--from",
            metavar="STAGE",
            help="Run from this stage (default: the first that did not succeed).",
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", metavar="MODEL", help="Run that stage on this model."),
    ] = None,
    deadline_s: Annotated[
        float | None,
        typer.Option("--deadline-s", min=0, help="The run's deadline (default: the job's)."),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the run until it ends.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JobResult JSON.")] = False,
    app_ref: AppOption = None,
) -> None:
    """Run a pipeline job again from a stage, as a new run: the stages before it are not
    run or charged again. Exit 2 (with the reason) when the job cannot be resumed."""
    with exit_codes():
        producer = Producer.from_settings(cli_settings(app_ref))
        started = resume_job(
            producer, job_id, from_stage, model, deadline_s, actor=f"cli:{getpass.getuser()}"
        )
        on = f" on {started.model}" if started.model else ""
        render.notice(f"job [bold]{job_id}[/]: run {started.run} from stage {started.start}{on}")
        if not wait:
            if as_json:
                render.print_json(producer.store.get(job_id).model_dump_json())
            else:
                render.out.print(job_id)
            return
        now = producer.store.get(job_id)
        stages = (now.result or {}).get("stages", [])
        # The bar counts outcomes: those recorded so far, and one per stage left to run.
        to_run = sum(1 for s in stages if s["run"] == started.run)
        job = watch(producer.store, job_id, len(now.subtasks) + to_run - 1)
    if job is None:
        render.error(f"{job_id} still not finished")
        raise typer.Exit(Exit.FAILED)
    if as_json:
        render.print_json(job.model_dump_json())
    else:
        render.show_result(job)
    raise typer.Exit(exit_code(job.status))


def diff(
    job_id: JobArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
    app_ref: AppOption = None,
) -> None:
    """A pipeline's latest run next to the one before: each stage's model, cost and output."""
    with exit_codes():
        compared = run_diff(open_store(cli_settings(app_ref)).get(job_id))
    if as_json:
        render.print_json(json.dumps(compared))
        return
    render.out.print(diff_table(compared))


def diff_table(compared: dict[str, Any]) -> Table:
    """The two runs side by side, one row per stage."""
    render.fit_width()
    before_run, after_run = compared["runs"]
    table = Table(title=f"Run {before_run} | run {after_run}", title_justify="left")
    table.add_column("stage")
    for run in (before_run, after_run):
        for name in ("model", "cost", "status", "output"):
            table.add_column(f"{name} ({run})", overflow="fold")
    for row in compared["stages"]:
        cells: list[str | Text] = [row["name"] + ("" if row["rerun"] else " (kept)")]
        for key in ("before", "after"):
            found = row[key]
            cells += [
                found["model"] or "-",
                render.usd(found["cost_usd"]),
                render.styled(found["status"]),
                _gist(found["output"]),
            ]
        table.add_row(*cells)
    before_cost, after_cost = compared["cost_usd"]
    table.caption = f"total {render.usd(before_cost)} | {render.usd(after_cost)}"
    return table


def _gist(output: Any, limit: int = 160) -> str:
    if output is None:
        return "-"
    text = json.dumps(output, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def register(app: typer.Typer) -> None:
    """Add `resume` and `diff` to the CLI."""
    app.command()(resume)
    app.command()(diff)
