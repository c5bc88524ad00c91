"""`fleetline breakers`: the fleet-wide circuit breakers, and resetting one by hand."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from fleetline.producer import cli_render as render
from fleetline.producer.cli_jobs import AppOption, cli_settings, exit_codes
from fleetline.shared.breakers import BreakerSnapshot, BreakerState, RedisBreakers, breaker_redis
from fleetline.shared.celery_app import redis_target
from fleetline.shared.settings import FleetlineSettings

breakers_app = typer.Typer(
    name="breakers",
    help="Circuit breakers, one per (agent, model) and one per tool: list them or reset one.",
    invoke_without_command=True,
)

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _breakers(settings: FleetlineSettings) -> RedisBreakers:
    return RedisBreakers(breaker_redis(redis_target(settings), settings.breaker), settings.breaker)


def _row(snap: BreakerSnapshot) -> dict[str, object]:
    row = asdict(snap)
    row["state"] = snap.state.value
    return row


@breakers_app.callback()
def breakers(ctx: typer.Context, as_json: Json = False, app_ref: AppOption = None) -> None:
    """Each breaker's state, failures in its window, and time until half-open."""
    if ctx.invoked_subcommand is not None:
        return
    with exit_codes():
        snapshots = _breakers(cli_settings(app_ref)).list_breakers()
    if as_json:
        render.print_json(json.dumps([_row(s) for s in snapshots]))
        return
    table = Table(title="Circuit breakers")
    for column in (
        "breaker",
        "state",
        "calls",
        "failures",
        "failure rate",
        "half-open in",
        "trips",
    ):
        table.add_column(column)
    for s in snapshots:
        table.add_row(
            s.name,
            s.state.value,
            str(s.calls),
            str(s.failures),
            f"{s.failure_rate:.0%}",
            f"{s.half_open_in_s:.1f}s" if s.half_open_in_s is not None else "",
            str(s.trips),
        )
    render.out.print(table if snapshots else "no breaker has recorded a call yet")


@breakers_app.command()
def reset(
    name: Annotated[str, typer.Argument(help="e.g. analysis:sim-large")], app_ref: AppOption = None
) -> None:
    """Close a breaker and empty its window."""
    with exit_codes():
        try:
            before = _breakers(cli_settings(app_ref)).reset(name)
        except ValueError as exc:
            render.error(str(exc))
            raise typer.Exit(2) from None
    render.out.print(f"{name}: {before.value} -> {BreakerState.CLOSED.value}")
