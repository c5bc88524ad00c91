"""`fleetline dlq list|show|replay|purge`: the dead letters, and putting them back.

Exit codes: 0 ok; 1 purge not confirmed or another failure; 2 an unknown letter id or one
that cannot be replayed; 4 Redis unavailable.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from fleetline.producer import cli_render as render
from fleetline.producer.cli_jobs import AppOption, Exit, cli_settings, exit_codes
from fleetline.producer.cli_ops import open_redis, utc
from fleetline.producer.replay import replay
from fleetline.shared.celery_app import make_celery
from fleetline.shared.deadletters import DeadLetter, DeadLetterStore
from fleetline.shared.settings import FleetlineSettings

dlq_app = typer.Typer(
    name="dlq", help="Dead letters: messages the fleet could not run.", no_args_is_help=True
)

Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
IdArg = Annotated[str, typer.Argument(metavar="ID", help="A dead letter's id (dlq list).")]


def _store(settings: FleetlineSettings) -> DeadLetterStore:
    return DeadLetterStore(open_redis(settings), settings.celery.dead_letter_max)


def _find(store: DeadLetterStore, entry_id: str) -> DeadLetter:
    letter = store.get(entry_id) if _valid_id(entry_id) else None
    if letter is None:
        render.error(f"no dead letter {entry_id} (see `fleetline dlq list`)")
        raise typer.Exit(Exit.BAD_INPUT)
    return letter


def _valid_id(entry_id: str) -> bool:
    # A stream id is <ms>-<seq>; anything else would be a Redis error, not "not found".
    ms, _, seq = entry_id.partition("-")
    return ms.isdigit() and (not seq or seq.isdigit())


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest N letters.")] = 100,
    as_json: Json = False,
    app_ref: AppOption = None,
) -> None:
    """The newest dead letters: when, why, which task and queue."""
    with exit_codes():
        store = _store(cli_settings(app_ref))
        letters, total = store.list(limit), store.count()
    if as_json:
        render.print_json(json.dumps([letter.as_dict() for letter in letters]))
        return
    render.fit_width()
    table = Table(title=f"Dead letters ({total})", title_justify="left")
    for name in ("id", "at", "reason", "queue", "task", "task id", "detail"):
        # Ids and names stay whole (they are copied into other commands); the rest folds.
        table.add_column(name, no_wrap=name in ("id", "at", "reason", "queue", "task"))
    for letter in letters:
        table.add_row(
            letter.id,
            utc(letter.at),
            Text(letter.reason, style="bold red"),
            letter.queue,
            letter.task,
            letter.task_id,
            Text(letter.detail[:200]),
        )
    render.out.print(table if letters else "no dead letters")


@dlq_app.command("show")
def dlq_show(entry_id: IdArg, as_json: Json = False, app_ref: AppOption = None) -> None:
    """One dead letter in full: its reason, and the message as it was."""
    with exit_codes():
        letter = _find(_store(cli_settings(app_ref)), entry_id)
    if as_json:
        render.print_json(json.dumps(letter.as_dict()))
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in (
        ("id", letter.id),
        ("at", utc(letter.at)),
        ("reason", letter.reason),
        ("detail", letter.detail),
        ("queue", letter.queue),
        ("task", letter.task),
        ("task id", letter.task_id),
        ("headers", json.dumps(letter.message.get("headers", {}), indent=2)),
        ("body", _body(letter.message)),
    ):
        grid.add_row(key, Text(str(value)))
    render.out.print(grid)


def _body(message: dict[str, Any]) -> str:
    """The message body as text: pretty JSON when it is JSON, else how it arrived."""
    if "body_b64" not in message:
        return json.dumps({k: message[k] for k in ("args", "kwargs") if k in message}, indent=2)
    try:
        raw = base64.b64decode(message["body_b64"])
    except (binascii.Error, ValueError):
        return "(undecodable base64)"
    try:
        return json.dumps(json.loads(raw), indent=2)
    except (UnicodeDecodeError, ValueError):
        return repr(raw)


@dlq_app.command("replay")
def dlq_replay(
    entry_id: IdArg,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the letter (default: delete it once sent).")
    ] = False,
    as_json: Json = False,
    app_ref: AppOption = None,
) -> None:
    """Put a dead letter back on its queue; it dead-letters again if it still cannot run."""
    with exit_codes():
        settings = cli_settings(app_ref)
        store = _store(settings)
        letter = _find(store, entry_id)
        app = make_celery(settings, send_only=True)
        try:
            replay(app, letter)
        except ValueError as exc:
            render.error(str(exc))
            raise typer.Exit(Exit.BAD_INPUT) from None
        finally:
            app.close()
        deleted = False if keep else store.delete(letter.id)
    if as_json:
        render.print_json(json.dumps({"id": letter.id, "queue": letter.queue, "deleted": deleted}))
        return
    render.out.print(f"replayed {letter.id} ({letter.task or 'message'}) to {letter.queue}")


@dlq_app.command("purge")
def dlq_purge(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Json = False,
    app_ref: AppOption = None,
) -> None:
    """Delete every dead letter."""
    with exit_codes():
        store = _store(cli_settings(app_ref))
        if not yes:
            typer.confirm(f"delete all {store.count()} dead letters?", abort=True, err=True)
        purged = store.purge()
    if as_json:
        render.print_json(json.dumps({"purged": purged}))
        return
    render.out.print(f"purged {purged} dead letters")
