"""`fleetline tenant purge T`: delete everything Redis holds of one tenant.

Exit codes: 0 purged; 1 not confirmed; 2 the tenant has work in flight (nothing deleted);
4 Redis unavailable.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer

from fleetline.producer import cli_render as render
from fleetline.producer.api_keys import TENANT_PATTERN
from fleetline.producer.cli_jobs import AppOption, Exit, cli_settings, exit_codes
from fleetline.producer.cli_ops import Json, open_redis
from fleetline.producer.tenant_purge import TenantBusy, purge_tenant

tenant_app = typer.Typer(name="tenant", help="A tenant's data.", no_args_is_help=True)


def tenant_name(value: str) -> str:
    """A tenant name as the CLI takes it (the API keys' pattern)."""
    if not re.match(TENANT_PATTERN, value):
        raise typer.BadParameter("1-64 letters, digits, '_', '.' or '-'")
    return value


@tenant_app.command("purge")
def purge(
    tenant: Annotated[str, typer.Argument(callback=tenant_name, help="Whose data.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Json = False,
    app_ref: AppOption = None,
) -> None:
    """Delete the tenant's jobs, audit, traces, cache, spend records, API keys and dead
    letters, and say how many of each went."""
    with exit_codes():
        client = open_redis(cli_settings(app_ref))
        if not yes:
            typer.confirm(f"delete every record of tenant {tenant!r}?", abort=True, err=True)
        try:
            counts = purge_tenant(client, tenant)
        except TenantBusy as exc:
            render.error(str(exc))
            raise typer.Exit(Exit.BAD_INPUT) from None
    if as_json:
        render.print_json(json.dumps({"tenant": tenant, "removed": counts.as_dict()}))
        return
    removed = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in counts.as_dict().items())
    render.out.print(f"purged tenant {tenant}: {removed}")
