"""`fleetline spend` and `fleetline spend reconcile`: what was spent, and whether the ledger
agrees with a provider's invoice."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from fleetline.producer import cli_render as render
from fleetline.producer.cli_jobs import AppOption, Exit, cli_settings, exit_codes
from fleetline.producer.cli_ops import Json, open_redis, utc
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

_SPEND_HELP = "Spent, reserved and saved in the current hour or day, and each limit's headroom."

spend_app = typer.Typer(
    name="spend",
    help=f"{_SPEND_HELP} `spend reconcile` compares the ledger with a provider's invoice.",
    invoke_without_command=True,
)


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
        ledger = Ledger(open_redis(settings))
        report = ledger.spend_report(window)
        found = report.by(by.value)
        if by is By.JOB:
            # The windows count no jobs: a job's row is its whole spend, from its counter.
            found = ledger.job_spends()
    limits = limit_rows(report, settings.spend, settings.fleet.agents)
    groups = dict(sorted(found.items()))
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
            "groups": {k: _group(v) for k, v in groups.items()},
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
    jobs (found with one SCAN, kept when the record's own job scope is that job)."""

    def load(call_ids: Sequence[str], jobs: Sequence[str]) -> Mapping[str, CallRecord]:
        records = ledger.call_records(call_ids)
        # Call id -> the jobs it was found under: read once, whatever the number of jobs.
        under: dict[str, set[str]] = {}
        for job, found in ledger.job_call_ids(jobs, limit=_MAX_RECORDS_PER_JOB).items():
            for call_id in found:
                if call_id not in records:
                    under.setdefault(call_id, set()).add(job)
        more = ledger.call_records(under)
        records.update({c: r for c, r in more.items() if r.job_id in ("", *under[c])})
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
    for name in ("spent", "calls", "tokens", "saved by cache", "saved by tiering"):
        table.add_column(name, justify="right")
    for key, s in groups.items():
        table.add_row(
            key,
            render.usd(s.spent_usd),
            str(s.calls),
            f"{s.spent_tokens:,}",
            render.usd(s.saved_cache_usd),
            render.usd(s.saved_tiering_usd),
        )
    return table


def _group(spend: ScopeSpend) -> dict[str, float]:
    """A group's row: holds are counted only where a limit reads them (the limits' rows)."""
    return {k: v for k, v in asdict(spend).items() if not k.startswith("reserved")}
