"""`fleetline serve` (the HTTP API), `fleetline keys` (its API keys) and `fleetline tenant`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from fleetline.producer import cli_render as render
from fleetline.producer.api_keys import ApiKeys, UnknownKey
from fleetline.producer.cli_jobs import AppOption, cli_settings, exit_codes
from fleetline.producer.cli_ops import Json, open_redis, utc
from fleetline.producer.cli_tenant import tenant_app, tenant_name

keys_app = typer.Typer(
    name="keys", help="API keys of `fleetline serve`: each names one tenant.", no_args_is_help=True
)


@keys_app.command("create")
def create(
    tenant: Annotated[str, typer.Option("--tenant", callback=tenant_name, help="Whose key.")],
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "",
    as_json: Json = False,
    app_ref: AppOption = None,
) -> None:
    """Make a key and print it, once: only its hash is kept."""
    with exit_codes():
        settings = cli_settings(app_ref)
        key, record = ApiKeys(open_redis(settings)).create(tenant, name)
        if as_json:
            typer.echo(json.dumps({"key": key, "key_id": record.key_id, "tenant": tenant}))
        else:
            typer.echo(key)
            render.notice(f"key {record.key_id} for tenant [bold]{tenant}[/]: shown only now")


@keys_app.command("list")
def list_keys(as_json: Json = False, app_ref: AppOption = None) -> None:
    """The keys (ids, tenants, names; never the keys themselves)."""
    with exit_codes():
        found = ApiKeys(open_redis(cli_settings(app_ref))).list()
        if as_json:
            typer.echo(json.dumps([k.as_dict() for k in found]))
            return
        table = Table("key id", "tenant", "name", "created")
        for k in found:
            table.add_row(k.key_id, k.tenant, k.name, utc(k.created_at))
        render.out.print(table)


@keys_app.command("revoke")
def revoke(key_id: str, app_ref: AppOption = None) -> None:
    """Revoke a key: its next request gets 401. Exit 2 for an unknown key id."""
    with exit_codes():
        try:
            record = ApiKeys(open_redis(cli_settings(app_ref))).revoke(key_id)
        except UnknownKey as exc:
            render.error(str(exc))
            raise typer.Exit(2) from None
        render.notice(f"revoked key {key_id} of tenant {record.tenant}")


SHUTDOWN_GRACE_S = 10


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8077,
    app_ref: AppOption = None,
) -> None:
    """Serve the HTTP API (jobs from other services, authenticated by API keys); its
    metrics on FLEETLINE_METRICS_HOST:FLEETLINE_METRICS_PORT, never on --port."""
    import uvicorn

    from fleetline.producer.cli_metrics import serve_own_metrics
    from fleetline.producer.http_api import make_api

    with exit_codes():
        api = make_api(serve_own_metrics(cli_settings(app_ref), port))
    uvicorn.run(
        api,
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        # On SIGTERM an event stream would hold the server open until its job ends: cut
        # what is still open after this long, well inside Kubernetes' default 30 s grace.
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app)
    app.add_typer(tenant_app)
    app.command("serve")(serve)
