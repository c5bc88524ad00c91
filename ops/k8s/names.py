"""Every name the manifests share: objects, labels, ports, paths, and the secret files.

One module so that a Deployment's volume, the `_FILE` variable that points into it and the
Secret it mounts cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetline.shared.errors import ConfigError
from fleetline.shared.secret_files import SECRET_SETTINGS

# What the base deploys; an overlay's `images:` names its registry and tag.
IMAGE = "fleetline:latest"

# Objects of the base.
CONFIG_MAP = "fleetline-config"
REDIS_SECRET = "fleetline-redis"
PROVIDERS_SECRET = "fleetline-providers"
FLOWER_SECRET = "fleetline-flower"
KEDA_CONFIG_MAP = "fleetline-keda"
KEDA_AUTH = "fleetline-keda-redis"
API = "fleetline-api"
BEAT = "fleetline-beat"
FLOWER = "fleetline-flower"
EXPORTER = "fleetline-exporter"

# The namespace the base is written for: only KEDA's address of Redis names it (KEDA's
# operator resolves names from its own namespace). An overlay with another namespace
# patches that address (the fleetline-keda ConfigMap).
NAMESPACE = "fleetline"
# Where the base expects Redis: a Service named `redis` in the fleet's namespace (the
# example overlay runs one). FLEETLINE_REDIS_URL and KEDA's address are built from these.
REDIS_HOST = "redis"
REDIS_PORT = 6379
REDIS_DB = 0

API_PORT = 8077
FLOWER_PORT = 5555
EXPORTER_PORT = 9809

# The image's unprivileged user and group (ops/Dockerfile).
UID = 10001
# Where the image keeps the usage spool (ops/Dockerfile sets FLEETLINE_SPOOL_DIR to it).
SPOOL_DIR = "/var/lib/fleetline/spool"
# Each Secret is mounted as a folder of files under here, one file per key.
SECRETS_ROOT = "/run/secrets/fleetline"

# Labels. `component` tells the roles apart; workers add the agent or tool they run.
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
WORKER_TYPE_LABEL = "fleetline/worker-type"
WORKER = "worker"


def labels(component: str, worker_type: str | None = None) -> dict[str, str]:
    """The labels of one role's objects (and the selector of its pods)."""
    found = {NAME_LABEL: "fleetline", COMPONENT_LABEL: component}
    if worker_type is not None:
        found[WORKER_TYPE_LABEL] = worker_type
    return found


def worker_name(worker_type: str) -> str:
    """The Kubernetes name of an agent's or tool's objects: `worker-` and the name, with
    `-` for `_` (DNS labels take no `_`; agent names never hold a `-`, so no two agents
    get one name). Agent names are at most 48 characters: this fits a 63-character label.

    Raises ConfigError for a name ending in `_`, which no DNS label may end with.
    """
    if worker_type.endswith("_"):
        raise ConfigError(f"agent or tool {worker_type!r}: a Kubernetes name cannot end in _")
    return f"{WORKER}-{worker_type.replace('_', '-')}"


@dataclass(frozen=True)
class SecretFile:
    """A secret setting read from a file: `<setting>_FILE` points at `key` of `secret`."""

    setting: str
    secret: str
    key: str

    def __post_init__(self) -> None:
        if self.setting not in SECRET_SETTINGS:
            raise ConfigError(f"{self.setting} has no _FILE form (shared/secret_files.py)")

    @property
    def variable(self) -> str:
        return f"{self.setting}_FILE"

    @property
    def path(self) -> str:
        return f"{secret_dir(self.secret)}/{self.key}"


def secret_dir(secret: str) -> str:
    """Where a pod mounts `secret`."""
    return f"{SECRETS_ROOT}/{secret.removeprefix('fleetline-')}"


# Every Fleetline process connects to Redis.
REDIS_PASSWORD = SecretFile("FLEETLINE_REDIS_PASSWORD", REDIS_SECRET, "password")
# Only workers call models.
PROVIDER_KEYS = (
    SecretFile("FLEETLINE_OPENAI_API_KEY", PROVIDERS_SECRET, "openai-api-key"),
    SecretFile("FLEETLINE_ANTHROPIC_API_KEY", PROVIDERS_SECRET, "anthropic-api-key"),
)
# Flower's login (user:password), which Flower itself reads from FLOWER_BASIC_AUTH.
FLOWER_AUTH_KEY = "basic-auth"
