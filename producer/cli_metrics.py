"""`fleetline exporter`, and the metrics endpoint of `fleetline up`, `worker` and `serve`.

Each of those three serves the registry every process of its host records into
(shared/metrics_node.py) at FLEETLINE_METRICS_HOST:FLEETLINE_METRICS_PORT (127.0.0.1:9808),
never on the API's port. `fleetline exporter` serves the fleet-wide gauges instead (queues,
breakers, spend: producer/fleet_gauges.py), read from Redis at each scrape, on
FLEETLINE_METRICS_EXPORTER_PORT (9809) or --port.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry, start_http_server

from fleetline.producer import cli_render as render
from fleetline.producer.cli_jobs import AppOption, cli_settings, exit_codes
from fleetline.producer.cli_local import sigterm_as_interrupt
from fleetline.producer.cli_ops import open_redis
from fleetline.producer.fleet_gauges import FleetGauges
from fleetline.shared.breakers import RedisBreakers, breaker_redis
from fleetline.shared.celery_app import redis_target
from fleetline.shared.errors import ConfigError, FleetlineError
from fleetline.shared.metrics_node import metrics_dir, serve
from fleetline.shared.metrics_settings import MetricsSettings
from fleetline.shared.settings import FleetlineSettings

# What the processes of `fleetline up` and `fleetline worker` are told (prometheus-client
# reads the first itself).
DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"
SERVE_VAR = "FLEETLINE_METRICS_SERVE"


def _url(settings: MetricsSettings, port: int) -> str:
    return f"http://{settings.host}:{port}/metrics"


@contextmanager
def host_metrics(settings: FleetlineSettings) -> Iterator[dict[str, str]]:
    """`fleetline up`: serve this host's endpoint while the block runs; yield what the
    fleet's processes need in their environment to record into it."""
    metrics = settings.metrics
    if not metrics.enabled:
        yield {}
        return
    folder = metrics_dir(metrics)
    server = serve(metrics, folder)
    if server is not None:
        render.notice(f"metrics at [bold]{_url(metrics, metrics.port)}[/]")
    else:
        render.notice(
            f"[yellow]metrics:[/] {metrics.host}:{metrics.port} is taken; set "
            "FLEETLINE_METRICS_PORT to serve this fleet's"
        )
    try:
        yield {DIR_VAR: str(folder), SERVE_VAR: "false"}
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()


def worker_metrics_env(settings: FleetlineSettings) -> dict[str, str]:
    """`fleetline worker`: the environment that makes the worker it becomes record and
    serve this host's endpoint (from its main process, before the pool starts)."""
    if not settings.metrics.enabled:
        return {}
    return {DIR_VAR: str(metrics_dir(settings.metrics)), SERVE_VAR: "true"}


def serve_own_metrics(settings: FleetlineSettings, api_port: int) -> FleetlineSettings:
    """`fleetline serve`: record this process's metrics and serve them on the metrics
    port; the settings to run with (they name the folder)."""
    metrics = settings.metrics
    if not metrics.enabled:
        return settings
    if api_port == metrics.port:
        raise ConfigError(
            f"--port: {api_port} is FLEETLINE_METRICS_PORT; metrics never share the API's port"
        )
    folder = metrics_dir(metrics)
    metrics = metrics.model_copy(update={"multiproc_dir": str(folder)})
    if serve(metrics, folder) is not None:
        render.notice(f"metrics at [bold]{_url(metrics, metrics.port)}[/]")
    return settings.model_copy(update={"metrics": metrics})


def exporter(
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=1,
            max=65535,
            help="Port to listen on (default: FLEETLINE_METRICS_EXPORTER_PORT, 9809).",
            show_default=False,
        ),
    ] = None,
    app_ref: AppOption = None,
) -> None:
    """Serve the fleet-wide gauges, read from Redis at each scrape: every queue's depth,
    every breaker's state, spend and its limits. One scrape target for the whole fleet."""
    with exit_codes():
        settings = cli_settings(app_ref)
        client = open_redis(settings)
        client.ping()  # a wrong URL fails now (exit 4), not at the first scrape
        breakers = RedisBreakers(
            breaker_redis(redis_target(settings), settings.breaker), settings.breaker
        )
        registry = CollectorRegistry(auto_describe=False)
        registry.register(FleetGauges(settings, client, breakers))
        where = port or settings.metrics.exporter_port
        try:
            server, _ = start_http_server(where, settings.metrics.host, registry)
        except OSError as exc:
            raise FleetlineError(
                f"--port: cannot listen on {settings.metrics.host}:{where}: {exc.strerror or exc}"
            ) from None
        render.notice(f"fleet gauges at [bold]{_url(settings.metrics, where)}[/]")
    try:
        with sigterm_as_interrupt():
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        render.notice("exporter stopped")
    finally:
        server.shutdown()
        client.close()


def register(app: typer.Typer) -> None:
    app.command("exporter")(exporter)
