"""The CLI of the supervisor: `fleetline approve`, `fleetline reject`, `fleetline actions`.

Exit codes: 0 done, 1 the action is not waiting for review (decided already, or its job
has ended), 2 an unknown job or action.
"""

from __future__ import annotations

import getpass
import json
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from fleetline.producer import cli_render as render
from fleetline.producer.cli_jobs import AppOption, cli_settings, exit_codes, open_store
from fleetline.producer.review import decide
from fleetline.shared.action_state import ActionEntry, ActionStore
from fleetline.shared.celery_app import make_celery

JobArg = Annotated[str, typer.Argument(metavar="JOB", help="The supervised job's id.")]
ActionArg = Annotated[
    str, typer.Argument(metavar="ACTION_ID", help="The action's id (fleetline actions JOB).")
]


def approve(job_id: JobArg, action_id: ActionArg, app_ref: AppOption = None) -> None:
    """Approve an action waiting for review: it is delivered (once)."""
    _decide(job_id, action_id, True, "", app_ref)


def reject(
    job_id: JobArg,
    action_id: ActionArg,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the action log).")] = "",
    app_ref: AppOption = None,
) -> None:
    """Reject an action waiting for review: it never runs."""
    _decide(job_id, action_id, False, reason, app_ref)


def _decide(job_id: str, action_id: str, approve: bool, reason: str, app_ref: str | None) -> None:
    with exit_codes():
        settings = cli_settings(app_ref)
        store = open_store(settings)
        app = make_celery(settings, send_only=True)
        try:
            said = decide(
                settings, store, app, job_id, action_id, approve, f"cli:{getpass.getuser()}", reason
            )
        finally:
            app.close()
    render.notice(said)


def actions(
    job_id: JobArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the action log as JSON.")] = False,
    app_ref: AppOption = None,
) -> None:
    """A supervised job's action log: every action, its review, and what it did."""
    with exit_codes():
        settings = cli_settings(app_ref)
        store = open_store(settings)
        store.raw(job_id)  # JobNotFound for an unknown id, not an empty log
        found = ActionStore(store.client, settings.limits.finished_ttl_s).entries(job_id)
    if as_json:
        shown = [e.model_dump(mode="json", exclude={"order"}) for e in found]
        render.print_json(json.dumps(shown, indent=2))
        return
    render.out.print(action_table(found))


def action_table(entries: list[ActionEntry]) -> Table:
    """The action log as a table."""
    table = Table(title="actions")
    for column in ("action", "type", "decision", "state", "violations", "reviewer", "done at"):
        table.add_column(column)
    for e in entries:
        violations = "; ".join(f"{v['policy']} {v['score']:g}: {v['reason']}" for v in e.violations)
        if e.recommendation:
            violations += f"\n→ {e.recommendation}"
        done = datetime.fromtimestamp(e.executed_at).strftime("%H:%M:%S") if e.executed_at else ""
        table.add_row(e.action_id, e.type, e.decision, e.state, violations, e.reviewer or "", done)
    return table


def register(app: typer.Typer) -> None:
    """Add the supervisor's commands to the `fleetline` app."""
    app.command()(approve)
    app.command()(reject)
    app.command()(actions)
