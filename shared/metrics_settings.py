"""Settings of the Prometheus metrics: FLEETLINE_METRICS_*, and PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Where `fleetline up`, `fleetline worker` and `fleetline serve` put the registry's files
# when PROMETHEUS_MULTIPROC_DIR is not set (under the working directory; a temporary
# folder when that is not writable, as in the image).
DEFAULT_DIR = ".fleetline/metrics"


class MetricsSettings(BaseSettings):
    """Where each host's metrics endpoint listens, and where its processes record."""

    model_config = SettingsConfigDict(
        env_prefix="FLEETLINE_METRICS_", extra="ignore", populate_by_name=True
    )

    # Off: no process records anything, and no endpoint is served.
    enabled: bool = True
    # The endpoint of `fleetline up`, `fleetline worker` and `fleetline serve` (never the
    # API's port), and of `fleetline exporter` on its own port.
    host: str = "127.0.0.1"
    port: int = Field(default=9808, ge=1, le=65535)
    exporter_port: int = Field(default=9809, ge=1, le=65535)
    # prometheus-client's own variable: the folder where every process of this host or
    # container records (one file per process). A process without it records nothing.
    multiproc_dir: str | None = Field(default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR")
    # Whether a Celery worker's main process serves the endpoint itself: `fleetline
    # worker` sets it for the worker it becomes (`fleetline up` serves for its children).
    serve: bool = False
