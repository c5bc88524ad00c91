"""Operator commands: `fleetline killswitch …` and `fleetline spend [reconcile]`; `register`
adds them all.

Exit codes as for the rest of the CLI: 0 ok, 1 another failure, 2 bad input, 3 a kill
switch refused, 4 Redis unavailable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import redis
import typer
from rich.table import Table
from rich.text import Text

from fleetline.producer import cli_render as render
from fleetline.producer.cli_jobs import AppOption, Exit, cli_settings, exit_codes
from fleetline.shared.killswitch import KillSwitches, SwitchState, check_scope, read_enforcement
from fleetline.shared.ledger import (
    CallRecord,
    Ledger,
    ScopeKind,
    ScopeSpend,
    SpendReport,
    SpendSettings,
    Window,
)
from fleetline.shared.reconcile import (
    InvoiceError,
    InvoiceLine,
    Reconciliation,
    parse_invoice,
    reconcile,
)
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

_SPEND_HELP = "Spent, reserved and saved in the current hour or day, and each limit's headroom."
spend_app = typer.Typer(
    name="spend",
    help=f"{_SPEND_HELP} `spend reconcile` compares the ledger with a provider's invoice.",
    invoke_without_command=True,
)


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


class By(StrEnum):
    AGENT = "agent"
    MODEL = "model"
    TENANT = "tenant"
    JOB = "job"


def spend(
    window: Annotated[
        Window, typer.Option("--window", help="The current UTC hour or day.")
    ] = Window.DAY,
    by: Annotated[
        By, typer.Option("--by", help="Break spend down by worker type (agent), model, ...")
    ] = By.AGENT,
    as_json: Json = False,
    app_ref: AppOption = None,
) -> None:
    """Spent, reserved and saved in the current hour or day, and each limit's headroom."""
    with exit_codes():
        settings = cli_settings(app_ref)
        report = Ledger(open_redis(settings)).spend_report(window)
    limits = limit_rows(report, settings.spend, settings.fleet.agents)
    groups = dict(sorted(report.by(by.value).items()))
    fleet = report.fleet
    if as_json:
        data = {
            "window": window.value,
            "bucket": report.bucket,
            "starts_at": report.starts_at,
            "ends_at": report.ends_at,
            **{k: v for k, v in asdict(fleet).items() if k.endswith("usd") or k == "calls"},
            "limits": [{**asdict(r), "headroom_usd": r.headroom_usd} for r in limits],
            "by": by.value,
            "groups": {k: asdict(v) for k, v in groups.items()},
        }
        render.print_json(json.dumps(data))
        return
    render.fit_width()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(justify="right")
    grid.add_row("window", f"{window.value}: {utc(report.starts_at)} to {utc(report.ends_at)}")
    grid.add_row("spent", render.usd(fleet.spent_usd))
    grid.add_row("reserved", render.usd(fleet.reserved_usd))
    grid.add_row("saved by cache", render.usd(fleet.saved_cache_usd))
    grid.add_row("saved by tiering", render.usd(fleet.saved_tiering_usd))
    grid.add_row("calls", str(fleet.calls))
    render.out.print(grid)
    render.out.print(_limits_table(limits, window))
    render.out.print(_groups_table(groups, by))


SpendWindow = Annotated[Window, typer.Option("--window", help="The current UTC hour or day.")]
SpendBy = Annotated[
    By, typer.Option("--by", help="Break spend down by worker type (agent), model, ...")
]


@spend_app.callback()
def spend_group(
    ctx: typer.Context,
    window: SpendWindow = Window.DAY,
    by: SpendBy = By.AGENT,
    as_json: Json = False,
    app_ref: AppOption = None,
) -> None:
    """Spent, reserved and saved in the current hour or day, and each limit's headroom."""
    if ctx.invoked_subcommand is None:
        spend(window, by, as_json, app_ref)


@spend_app.command("reconcile")
def spend_reconcile(
    invoice: Annotated[
        Path,
        typer.Option(
            "--invoice",
            help="The invoice: JSON lines, one per billed call (FLEETLINE_SIM_INVOICE's).",
            show_default=False,
        ),
    ],
    as_json: Json = False,
    app_ref: AppOption = None,
) -> None:
    """Compare the ledger with a provider's invoice (exit 1 when they differ).

    Calls and USD billed vs charged, per job and per tenant, and every difference: billed
    but not charged, charged a different amount, charged but not billed.
    """
    with exit_codes():
        settings = cli_settings(app_ref)
        try:
            lines = read_invoice(invoice)
            ledger = Ledger(open_redis(settings))
            result = reconcile(lines, settings.models, ledger_records(ledger))
        except InvoiceError as exc:
            render.error(f"{invoice}: {exc}")
            raise typer.Exit(Exit.BAD_INPUT) from None
    if as_json:
        render.print_json(json.dumps(result.to_json()))
    else:
        _show_reconciliation(result)
    if not result.agrees:
        raise typer.Exit(Exit.FAILED)


def read_invoice(path: Path) -> list[InvoiceLine]:
    """The invoice file's lines, or InvoiceError (unreadable, or naming its bad line)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvoiceError(f"cannot read the invoice: {exc}") from None
    return parse_invoice(text.splitlines())


# The most records of one job the reconciliation reads (an operator command's bound).
_MAX_RECORDS_PER_JOB = 100_000


def ledger_records(
    ledger: Ledger,
) -> Callable[[Sequence[str], Sequence[str]], Mapping[str, CallRecord]]:
    """The reconciliation's loader: the invoice's call records, and every record of its
    jobs (found with SCAN, kept when the record's own job scope is that job)."""

    def load(call_ids: Sequence[str], jobs: Sequence[str]) -> Mapping[str, CallRecord]:
        records = ledger.call_records(call_ids)
        for job in jobs:
            found = ledger.job_call_ids(job, limit=_MAX_RECORDS_PER_JOB)
            more = ledger.call_records([c for c in found if c not in records])
            records.update({c: r for c, r in more.items() if r.job_id in ("", job)})
        return records

    return load


def _show_reconciliation(result: Reconciliation) -> None:
    render.fit_width()
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(justify="right")
    grid.add_row("calls billed", str(result.billed_calls))
    grid.add_row("calls charged", str(result.charged_calls))
    grid.add_row("billed", render.usd(result.billed_usd))
    grid.add_row("charged", render.usd(result.charged_usd))
    render.out.print(grid)
    for title, table in (("tenant", result.by_tenant), ("job", result.by_job)):
        totals = Table(title=f"By {title}", title_justify="left")
        totals.add_column(title)
        totals.add_column("billed", justify="right")
        totals.add_column("charged", justify="right")
        for name, t in table.items():
            totals.add_row(Text(name or "-"), render.usd(t.billed_usd), render.usd(t.charged_usd))
        render.out.print(totals)
    if result.agrees:
        render.out.print("[green]the ledger and the invoice agree[/]")
        return
    diffs = Table(title="Differences", title_justify="left")
    for name in ("kind", "call id", "job", "billed", "charged"):
        diffs.add_column(name, justify="right" if name in ("billed", "charged") else "left")
    for d in result.differences:
        diffs.add_row(
            d.kind,
            Text("\n".join(d.call_id) if isinstance(d.call_id, list) else d.call_id),
            Text("\n".join(d.job_id) if isinstance(d.job_id, list) else d.job_id),
            render.usd(d.billed_usd),
            render.usd(d.charged_usd),
        )
    render.out.print(diffs)


@dataclass(frozen=True)
class LimitRow:
    """A configured limit of one scope in one window, and how much of it is left."""

    scope: str
    limit_usd: float
    spent_usd: float
    reserved_usd: float

    @property
    def headroom_usd(self) -> float:
        return max(0.0, self.limit_usd - self.spent_usd - self.reserved_usd)


def limit_rows(
    report: SpendReport, limits: SpendSettings, agents: Iterable[str] = ()
) -> list[LimitRow]:
    """Every configured limit of the report's window, with what is spent and held
    (a `*` default is shown for each of `agents` too)."""
    hourly = report.window is Window.HOUR
    tables = {
        ScopeKind.TENANT: limits.tenant_hourly_usd if hourly else limits.tenant_daily_usd,
        ScopeKind.WORKER_TYPE: (
            limits.worker_type_hourly_usd if hourly else limits.worker_type_daily_usd
        ),
    }
    scopes = ["fleet"]
    for kind, table in tables.items():
        names = {n for n in table if n != "*"}
        if "*" in table:
            # The default applies to every name: show the ones that spent, and every type.
            names |= set(report.by("agent" if kind is ScopeKind.WORKER_TYPE else "tenant"))
            if kind is ScopeKind.WORKER_TYPE:
                names |= set(agents)
        scopes += [f"{kind.value}:{n}" for n in sorted(names)]
    rows = []
    for scope in scopes:
        kind_name, _, name = scope.partition(":")
        limit = limits.limit(ScopeKind(kind_name), name, report.window)
        if limit is not None:
            used = report.scopes.get(scope, ScopeSpend())
            rows.append(LimitRow(scope, limit, used.spent_usd, used.reserved_usd))
    return rows


def _limits_table(rows: list[LimitRow], window: Window) -> Table | str:
    adjective = "hourly" if window is Window.HOUR else "daily"
    if not rows:
        return f"no {adjective} spend limits are set (FLEETLINE_SPEND_*)"
    table = Table(title=f"Limits ({adjective})", title_justify="left")
    table.add_column("scope")
    for name in ("limit", "spent", "reserved", "headroom"):
        table.add_column(name, justify="right")
    for r in rows:
        headroom = Text(render.usd(r.headroom_usd), style="green" if r.headroom_usd else "red")
        table.add_row(
            r.scope,
            render.usd(r.limit_usd),
            render.usd(r.spent_usd),
            render.usd(r.reserved_usd),
            headroom,
        )
    return table


def _groups_table(groups: dict[str, ScopeSpend], by: By) -> Table:
    title = "worker type" if by is By.AGENT else by.value
    table = Table(title=f"By {title}", title_justify="left")
    table.add_column(title)
    for name in ("spent", "reserved", "calls", "tokens", "saved by cache", "saved by tiering"):
        table.add_column(name, justify="right")
    for key, s in groups.items():
        table.add_row(
            key,
            render.usd(s.spent_usd),
            render.usd(s.reserved_usd),
            str(s.calls),
            f"{s.spent_tokens:,}",
            render.usd(s.saved_cache_usd),
            render.usd(s.saved_tiering_usd),
        )
    return table


def register(app: typer.Typer) -> None:
    """Add the operator commands to the `fleetline` app."""
    from fleetline.producer.cli_dlq import dlq_app
    from fleetline.producer.cli_schedule import schedule_app

    app.add_typer(killswitch_app)
    app.add_typer(schedule_app)
    app.add_typer(dlq_app)
    app.add_typer(spend_app)
