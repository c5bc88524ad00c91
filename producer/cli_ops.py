"""Operator commands: `fleetline killswitch …` here, `spend` in cli_spend, `schedule` and
`dlq` in their own modules; `register` adds them all.

Exit codes as for the rest of the CLI: 0 ok, 1 another failure, 2 bad input, 3 a kill
switch refused, 4 Redis unavailable.
"""

from __future__ import annotations

import json
import time
from typing import Annotated

import redis
import typer
from rich.table import Table

from fleetline.producer import cli_render as render
from fleetline.producer.cli_jobs import AppOption, cli_settings, exit_codes
from fleetline.shared.killswitch import KillSwitches, SwitchState, check_scope, read_enforcement
from fleetline.shared.ledger import Ledger, ScopeKind, SpendReport, SpendSettings, Window
from fleetline.shared.redis_client import make_redis
from fleetline.shared.settings import FleetlineSettings

killswitch_app = typer.Typer(
    name="killswitch",
    help="Spend kill switches: list, trip or reset them.",
    no_args_is_help=True,
)


def _scope(value: str | None) -> str | None:
    try:
        return None if value is None else check_scope(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
ScopeOpt = Annotated[
    str,
    typer.Option("--scope", callback=_scope, help="fleet, tenant:NAME or worker_type:NAME."),
]
WindowOpt = Annotated[Window, typer.Option("--window", help="The UTC window of the switch.")]


def open_redis(settings: FleetlineSettings) -> redis.Redis:
    """A client whose commands give up like submit's: a dead Redis fails fast (exit 4)."""
    return make_redis(settings, timeout_s=settings.redis.submit_timeout_s)


def utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def _state(s: SwitchState) -> dict[str, object]:
    data: dict[str, object] = json.loads(s.to_json())
    return data


@killswitch_app.command("status")
def killswitch_status(
    scope: Annotated[
        str | None, typer.Option("--scope", callback=_scope, help="Only this scope.")
    ] = None,
    as_json: Json = False,
    app_ref: AppOption = None,
) -> None:
    """Tripped switches (why, when they reset), paused queues, and the last beat check."""
    with exit_codes():
        settings = cli_settings(app_ref)
        client = open_redis(settings)
        switches = [s for s in KillSwitches(client).status() if scope in (None, s.scope)]
        record = read_enforcement(client)
    if as_json:
        render.print_json(
            json.dumps(
                {
                    "switches": [_state(s) for s in switches],
                    "paused_queues": record.paused,
                    "checks": record.checks,
                    "last_check_at": record.last_check_at,
                }
            )
        )
        return
    now = time.time()
    render.fit_width()
    table = Table(title="Kill switches", title_justify="left")
    for name in ("scope", "window", "reason", "tripped at", "resets at", "resets in"):
        table.add_column(name)
    for s in switches:
        table.add_row(
            render.styled(s.scope),
            s.window.value,
            s.reason,
            utc(s.tripped_at),
            utc(s.resets_at),
            f"{max(0.0, s.resets_at - now):,.0f} s",
        )
    render.out.print(table if switches else "no kill switch is tripped")
    for queue, scopes in record.paused.items():
        render.out.print(f"queue [bold]{queue}[/] paused by {', '.join(scopes)}")
    interval = settings.killswitch.interval_s
    if record.last_check_at is None:
        render.notice("[yellow]no enforcement check has run yet: is beat running?[/]")
    else:
        age = now - record.last_check_at
        style = "yellow" if age > 3 * interval else "dim"
        render.notice(f"[{style}]last beat check {age:,.0f} s ago ({record.checks} checks)[/]")


@killswitch_app.command("trip")
def killswitch_trip(
    scope: ScopeOpt = "fleet",
    window: WindowOpt = Window.DAY,
    reason: Annotated[str, typer.Option("--reason", help="Why (shown to refused callers).")] = (
        "tripped by hand"
    ),
    as_json: Json = False,
    app_ref: AppOption = None,
) -> None:
    """Trip a switch until the end of its UTC hour or day (beat then pauses its queues)."""
    with exit_codes():
        settings = cli_settings(app_ref)
        state = KillSwitches(open_redis(settings)).trip(scope, window, reason)
    assert state is not None  # only keep_existing=True returns None
    if as_json:
        render.print_json(json.dumps(_state(state)))
        return
    interval = settings.killswitch.interval_s
    render.out.print(f"tripped [bold]{scope}[/] ({window.value}) until {utc(state.resets_at)}")
    render.notice(f"beat pauses the queues it covers at its next check (every {interval:g} s)")


@killswitch_app.command("reset")
def killswitch_reset(
    scope: ScopeOpt = "fleet",
    window: WindowOpt = Window.DAY,
    as_json: Json = False,
    app_ref: AppOption = None,
) -> None:
    """Clear a switch by hand; beat resumes its queues at its next check."""
    with exit_codes():
        settings = cli_settings(app_ref)
        client = open_redis(settings)
        was_tripped = KillSwitches(client).reset(scope, window)
        over = _over_limit(Ledger(client).spend_report(window), settings.spend, scope)
    if as_json:
        render.print_json(
            json.dumps(
                {
                    "scope": scope,
                    "window": window.value,
                    "was_tripped": was_tripped,
                    "over_limit": over,
                }
            )
        )
        return
    done = "reset" if was_tripped else "was not tripped:"
    render.out.print(f"{done} [bold]{scope}[/] ({window.value})")
    if over:
        render.notice(
            f"[yellow]warning:[/] {over}; beat trips it again at its next check unless "
            "the limit is raised"
        )


def _over_limit(report: SpendReport, limits: SpendSettings, scope: str) -> str:
    """Why the scope is still at its limit in this window ('' when it is not)."""
    kind_name, _, name = scope.partition(":")
    limit = limits.limit(ScopeKind(kind_name), name, report.window)
    spent = report.scopes.get(scope)
    if limit is None or spent is None or spent.spent_usd < limit:
        return ""
    return f"{scope} has spent {render.usd(spent.spent_usd)} of its {limit:g} USD limit"


def register(app: typer.Typer) -> None:
    """Add the operator commands to the `fleetline` app."""
    from fleetline.producer.cli_dlq import dlq_app
    from fleetline.producer.cli_schedule import schedule_app
    from fleetline.producer.cli_spend import spend_app

    app.add_typer(killswitch_app)
    app.add_typer(schedule_app)
    app.add_typer(dlq_app)
    app.add_typer(spend_app)
