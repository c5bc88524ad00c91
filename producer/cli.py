"""The `fleetline` command: run a local fleet, submit jobs, and read their results and trail.

Exit codes: 0 succeeded or degraded (or still running, for `status`/`result`), 1 any other
end or a `--wait` that timed out, 2 bad input or settings, 3 a kill switch refused the job,
4 Redis unavailable.
"""

from __future__ import annotations

import getpass
import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fleetline.producer import cli_render as render
from fleetline.producer.cancel import cancel_job
from fleetline.producer.cli_actions import register as register_actions
from fleetline.producer.cli_breakers import breakers_app
from fleetline.producer.cli_jobs import (
    AppOption,
    Exit,
    cli_settings,
    exit_code,
    exit_codes,
    open_store,
    read_spec,
    watch,
)
from fleetline.producer.cli_local import (
    child_env,
    local_redis,
    run_worker_processes,
    running_fleet,
    sigterm_as_interrupt,
    wait_ready,
)
from fleetline.producer.cli_metrics import host_metrics, worker_metrics_env
from fleetline.producer.cli_metrics import register as register_metrics
from fleetline.producer.cli_ops import register as register_ops
from fleetline.producer.cli_patterns import register as register_patterns
from fleetline.producer.cli_serve import register as register_serve
from fleetline.producer.cli_trace import register as register_trace
from fleetline.producer.cli_trace import waterfall
from fleetline.producer.submit import Producer, parse_spec
from fleetline.producer.supervisor import flower_command, worker_command
from fleetline.producer.trace_view import view
from fleetline.shared.errors import ConfigError
from fleetline.shared.schemas import JobResult
from fleetline.shared.settings import FleetlineSettings
from fleetline.shared.trace_store import load_trace

app = typer.Typer(
    name="fleetline",
    help="Fleetline: a Celery + Redis worker fleet for multi-agent LLM jobs.",
    no_args_is_help=True,
    add_completion=False,
    # Locals in a traceback would include settings, API keys among them.
    pretty_exceptions_show_locals=False,
)

# The demo's sim latency when FLEETLINE_SIM_LATENCY_MS is unset: slow enough to watch.
DEMO_SIM_LATENCY_MS = 150
SAMPLES = Path("ops") / "samples"
SAMPLE = SAMPLES / "research_brief.json"

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JobResult JSON instead of tables.")]
JobArg = Annotated[str, typer.Argument(metavar="JOB", help="The job id submit printed.")]


@app.command()
def up(
    log_dir: Annotated[
        str | None, typer.Option("--log-dir", help="Write each process's log to DIR/<name>.log.")
    ] = None,
    flower: Annotated[
        bool, typer.Option("--flower", help="Run Flower too (basic auth: FLOWER_BASIC_AUTH).")
    ] = False,
    flower_port: Annotated[
        int, typer.Option("--flower-port", envvar="FLEETLINE_FLOWER_PORT", min=1, max=65535)
    ] = 5555,
    app_ref: AppOption = None,
) -> None:
    """Run the fleet here: one worker per agent and tool, plus beat, until Ctrl-C or SIGTERM.

    Without FLEETLINE_REDIS_URL an embedded Redis is started (and stopped at the end);
    other `fleetline` commands run in this directory find it. Every process's metrics are
    served at 127.0.0.1:FLEETLINE_METRICS_PORT (9808). With --flower, Flower listens on
    127.0.0.1:--flower-port behind the basic auth of FLOWER_BASIC_AUTH.
    """
    with exit_codes():
        if flower and ":" not in os.environ.get("FLOWER_BASIC_AUTH", ""):
            # Flower would run open to anyone who reaches the port: refuse, as compose does.
            raise ConfigError("--flower: set FLOWER_BASIC_AUTH=user:password first")
        settings = cli_settings(app_ref, find_redis=False)
        try:
            with sigterm_as_interrupt(), local_redis(settings) as (settings, started):
                if started:
                    render.notice(f"embedded Redis at [bold]{started}[/]")
                with (
                    host_metrics(settings) as metrics_env,
                    running_fleet(settings, child_env(settings, metrics_env), log_dir) as fleet,
                ):
                    render.notice(
                        f"fleet [bold]{settings.fleet.name}[/] ({settings.app or 'example'})"
                    )
                    for name, policy in settings.policies.items():
                        render.notice(f"{name}: {policy.pool} x {policy.concurrency}")
                    wait_ready(settings)
                    if flower:
                        # After the workers: Flower lists the queues of those it finds at start.
                        fleet.add("flower", flower_command(flower_port))
                        render.notice(f"Flower at [bold]http://127.0.0.1:{flower_port}[/]")
                    render.notice("[green]fleet ready[/]; Ctrl-C stops it")
                    restarts: dict[str, int] = {}
                    while True:
                        time.sleep(0.5)
                        if fleet.restarts != restarts:
                            restarts = dict(fleet.restarts)
                            render.notice(f"[yellow]restarted:[/] {restarts}")
                        if fleet.given_up:
                            # A fleet missing a worker for good is no fleet: stop, loudly.
                            render.notice(
                                f"[red]gave up on[/] {', '.join(fleet.given_up)}: they kept "
                                "crashing (see their logs); stopping the fleet"
                            )
                            raise typer.Exit(1)
        except KeyboardInterrupt:
            render.notice("fleet stopped")


@app.command()
def worker(
    agents: Annotated[
        str,
        typer.Option(
            "--agents",
            help="Comma-separated agents and tools whose queues this worker consumes "
            "(default: all of the fleet's).",
            show_default=False,
        ),
    ] = "",
    processes: Annotated[
        int | None,
        typer.Option(
            "--processes",
            min=1,
            max=64,
            help="Worker processes of these queues (default: FLEETLINE_WORKER_PROCESSES, "
            "1); one per core uses every core: a threads pool runs its Python on one.",
            show_default=False,
        ),
    ] = None,
    app_ref: AppOption = None,
) -> None:
    """Run the worker of the named agents and tools (what a container runs).

    It also consumes the fleet's housekeeping queue. With one process (the default) this
    process becomes the Celery worker, so SIGTERM is its warm shutdown. With --processes N
    it supervises N workers, named `<agents>-1` to `<agents>-N`, restarts one that dies,
    drains them all on SIGTERM, and exits 1 if one keeps crashing. It serves its
    processes' metrics at 127.0.0.1:FLEETLINE_METRICS_PORT (9808).
    """
    with exit_codes():
        settings = cli_settings(app_ref)
        known = settings.fleet.worker_types
        names = [n.strip() for n in agents.split(",") if n.strip()] or list(known)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(
                f"--agents: fleet {settings.fleet.name} has no agent or tool "
                f"{', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))})"
            )
        count = processes or settings.worker_processes
        if count > 1:
            with host_metrics(settings) as metrics_env:
                code = run_worker_processes(
                    settings, names, count, child_env(settings, metrics_env)
                )
            raise typer.Exit(code)
        command = worker_command(settings, names)
        env = child_env(settings, worker_metrics_env(settings))
    os.execve(command[0], command, env)


@app.command()
def submit(
    spec_file: Annotated[str, typer.Argument(metavar="SPEC.json", help="Job spec; - for stdin.")],
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job until it ends.")] = False,
    as_json: JsonFlag = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=0,
            help="With --wait: give up after S seconds (default: deadline + 30 s).",
        ),
    ] = None,
    app_ref: AppOption = None,
) -> None:
    """Submit a job spec; print its id, or with --wait its result."""
    with exit_codes():
        settings = cli_settings(app_ref)
        raw = read_spec(spec_file, settings.limits)
        # Bad input is refused before anything needs Redis.
        parse_spec(raw, settings)
        producer = Producer.from_settings(settings)
        receipt = producer.submit(raw)
        if not receipt.created:
            render.notice(f"idempotency key already used: job {receipt.job_id}")
        if not wait:
            if as_json:
                render.print_json(producer.store.get(receipt.job_id).model_dump_json())
            else:
                render.out.print(receipt.job_id)
            return
        render.notice(f"job [bold]{receipt.job_id}[/] ({receipt.subtasks} subtasks)")
        job = watch(producer.store, receipt.job_id, receipt.subtasks, timeout)
    _finish(job, receipt.job_id, as_json, timeout)


@app.command()
def status(job_id: JobArg, as_json: JsonFlag = False, app_ref: AppOption = None) -> None:
    """A job's status, completeness and cost."""
    with exit_codes():
        job = open_store(cli_settings(app_ref)).get(job_id)
    if as_json:
        render.print_json(job.model_dump_json())
    else:
        render.out.print(render.summary(job))
    raise typer.Exit(exit_code(job.status))


@app.command()
def result(job_id: JobArg, as_json: JsonFlag = False, app_ref: AppOption = None) -> None:
    """A job's answer, per-step table, total cost and completeness."""
    with exit_codes():
        job = open_store(cli_settings(app_ref)).get(job_id)
    _finish(job, job_id, as_json)


@app.command()
def cancel(job_id: JobArg, app_ref: AppOption = None) -> None:
    """Cancel a running job: steps not yet started never run. Exit 1 if it had ended."""
    with exit_codes():
        store = open_store(cli_settings(app_ref))
        cancelled = cancel_job(store, job_id, f"cli:{getpass.getuser()}")
        status = store.get(job_id).status
    if not cancelled:
        render.error(f"job {job_id} had already ended: {status.value}")
        raise typer.Exit(1)
    render.notice(f"job {job_id} cancelled")


@app.command()
def audit(job_id: JobArg, as_json: JsonFlag = False, app_ref: AppOption = None) -> None:
    """Every state change of a job: time, actor, action, version, details."""
    with exit_codes():
        store = open_store(cli_settings(app_ref))
        store.raw(job_id)  # JobNotFound for an unknown id, not an empty trail
        entries = store.audit(job_id)
    if as_json:
        render.print_json(render.audit_json(entries))
    else:
        render.out.print(render.audit_table(entries))


@app.command()
def demo(
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help="The example job kind to run (research_brief, document_pipeline, debate, "
            "notify): "
            f"its sample spec in {SAMPLES}/.",
        ),
    ] = "research_brief",
    spec_file: Annotated[
        Path | None, typer.Option("--spec", help=f"Job spec (default: the kind's, {SAMPLE}).")
    ] = None,
    app_ref: AppOption = None,
) -> None:
    """The whole tour on this machine: Redis, fleet, a research brief (or another example
    kind), its result and trace."""
    with exit_codes():
        settings = cli_settings(app_ref, find_redis=False)
        raw = read_spec(str(spec_file or _sample(kind)), settings.limits)
        parse_spec(raw, settings)
        extra: dict[str, str] = {}
        if "latency_ms" not in settings.sim.model_fields_set:
            extra["FLEETLINE_SIM_LATENCY_MS"] = str(DEMO_SIM_LATENCY_MS)
        with sigterm_as_interrupt(), local_redis(settings) as (settings, started):
            log_dir = tempfile.mkdtemp(prefix="fleetline-demo-")
            where = f"embedded Redis at {started}" if started else "Redis at FLEETLINE_REDIS_URL"
            render.notice(f"using {where}; worker logs in {log_dir}")
            job = _demo_run(settings, raw, child_env(settings, extra), log_dir)
    _finish(job, "the demo job", as_json=False, render_result=False)


def _demo_run(
    settings: FleetlineSettings, raw: Any, env: dict[str, str], log_dir: str
) -> JobResult | None:
    """Start the fleet, run one job, and show its result and trace before stopping it."""
    with running_fleet(settings, env, log_dir):
        with render.err.status("starting workers and beat…"):
            wait_ready(settings)
        producer = Producer.from_settings(settings)
        receipt = producer.submit(raw)
        render.notice(f"submitted job [bold]{receipt.job_id}[/] ({receipt.subtasks} subtasks)")
        job = watch(producer.store, receipt.job_id, receipt.subtasks)
        if job is not None:
            render.show_result(job)
            render.out.print(render.audit_table(producer.store.audit(job.job_id)))
            found = load_trace(producer.store.client, job.job_id)
            if found is not None:
                render.out.print(waterfall(view(found), job))
        return job


def _sample(kind: str = "research_brief") -> Path:
    """The bundled sample of a kind: beside the source tree, else under the current
    directory."""
    sample = SAMPLES / f"{kind}.json"
    bundled = Path(__file__).resolve().parents[1] / sample
    found = bundled if bundled.exists() else sample
    if not found.exists():
        raise ConfigError(f"--kind: no sample spec for {kind!r} ({sample} does not exist)")
    return found


def _finish(
    job: JobResult | None,
    job_id: str,
    as_json: bool,
    timeout_s: float | None = None,
    render_result: bool = True,
) -> None:
    """Print a final result and exit with its code (1 when the wait timed out)."""
    if job is None:
        after = f" after {timeout_s:g}s" if timeout_s is not None else ""
        render.error(f"{job_id} still not finished{after}")
        raise typer.Exit(Exit.FAILED)
    if as_json:
        render.print_json(job.model_dump_json())
    elif render_result:
        render.show_result(job)
    raise typer.Exit(exit_code(job.status))


# trace reads a job like status and audit; killswitch, spend, schedule and dlq are the
# operator commands, listed after the job commands.
register_trace(app)
# resume and diff: a pipeline's runs; approve, reject and actions: a supervised job's.
register_patterns(app)
register_actions(app)
register_ops(app)
register_serve(app)
register_metrics(app)
app.add_typer(breakers_app)

if __name__ == "__main__":
    app()
