"""The roles beside the workers: beat (exactly one), the HTTP API with its Service,
Flower behind basic auth with its Service, and the metrics exporter with its Service."""

from __future__ import annotations

from ops.k8s.names import (
    API,
    API_PORT,
    BEAT,
    EXPORTER,
    EXPORTER_PORT,
    FLOWER,
    FLOWER_AUTH_KEY,
    FLOWER_PORT,
    FLOWER_SECRET,
    labels,
)
from ops.k8s.pods import (
    Manifest,
    container,
    deployment,
    disruption_budget,
    http_probe,
    pod_spec,
    python_probe,
    resources,
)

# Held while RedBeat's lock in Redis is: beat takes it at start and extends it on every
# wake-up (at least every 5 s; it lapses 30 s after the last, beat/app.py), so a hung or
# disconnected beat lets it expire. Read through RedBeat's own config: the key and the
# Redis are exactly beat's. The same check as docker-compose.yml's.
BEAT_LOCK = (
    "import sys; from redbeat.schedulers import ensure_conf, get_redis; "
    "from fleetline.beat.app import app; "
    "sys.exit(0 if get_redis(app).pttl(ensure_conf(app).lock_key) > 0 else 1)"
)

# Refuses to start on an empty login, or one ending in a newline (a file written with
# `echo`): Flower would refuse every login. Flower reads FLOWER_BASIC_AUTH itself (its
# FLOWER_ variables are its options), so the login never reaches a command line.
FLOWER_SCRIPT = (
    'test -n "$FLOWER_BASIC_AUTH" || { echo "FLOWER_BASIC_AUTH is empty: set user:password '
    f'in the {FLOWER_SECRET} Secret" >&2; exit 1; }}; '
    'test "$(printf %s "$FLOWER_BASIC_AUTH" | wc -l)" -eq 0 || { echo "FLOWER_BASIC_AUTH '
    'holds a newline: write the Secret without one (printf, not echo)" >&2; exit 1; }; '
    f"exec celery -A fleetline.workers.app flower --address=0.0.0.0 --port={FLOWER_PORT}"
)

# There is no `fleetline beat`; Kubernetes puts FLEETLINE_LOG_LEVEL (from the ConfigMap)
# into `$(...)`, so beat logs at the level the other processes do.
BEAT_COMMAND = [
    "celery", "-A", "fleetline.beat.app", "beat",
    "-S", "redbeat.RedBeatScheduler", "-l", "$(FLEETLINE_LOG_LEVEL)",
]  # fmt: skip

ROLLING = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def beat() -> list[Manifest]:
    main = container(
        "beat",
        BEAT_COMMAND,
        resources=resources("100m", "128Mi", "256Mi"),
        # A beat replacing one that was killed waits for the old lock to lapse (30 s).
        startupProbe=python_probe(BEAT_LOCK, 10, 12),
        livenessProbe=python_probe(BEAT_LOCK, 30, 3),
    )
    return [
        deployment(
            BEAT,
            labels("beat"),
            pod_spec(main),
            # Exactly one, and Recreate: the old pod is gone before the new one starts,
            # so a rollout never runs two (RedBeat's lock would make the second wait).
            replicas=1,
            strategy={"type": "Recreate"},
        )
    ]


def api() -> list[Manifest]:
    main = container(
        "api",
        ["fleetline", "serve", "--host", "0.0.0.0", "--port", str(API_PORT)],
        ports=[{"name": "http", "containerPort": API_PORT}],
        resources=resources("250m", "256Mi", "512Mi"),
        # Ready while it answers and its Redis does; alive while it answers.
        readinessProbe=http_probe("/v1/readyz", "http", 10, 3),
        livenessProbe=http_probe("/v1/healthz", "http", 20, 3),
        # Endpoints are removed while the pod stops; requests routed before that still
        # arrive for a few seconds.
        lifecycle={"preStop": {"exec": {"command": ["sleep", "5"]}}},
    )
    own = labels("api")
    return [
        deployment(API, own, pod_spec(main), replicas=2, strategy=ROLLING),
        service(API, own, API_PORT),
        disruption_budget(API, own),
    ]


def flower() -> list[Manifest]:
    auth = {"secretKeyRef": {"name": FLOWER_SECRET, "key": FLOWER_AUTH_KEY}}
    main = container(
        "flower",
        ["sh", "-c", FLOWER_SCRIPT],
        env=[{"name": "FLOWER_BASIC_AUTH", "valueFrom": auth}],
        ports=[{"name": "http", "containerPort": FLOWER_PORT}],
        resources=resources("100m", "256Mi", "512Mi"),
        # /healthcheck answers without the login.
        readinessProbe=http_probe("/healthcheck", "http", 30, 3),
        livenessProbe=http_probe("/healthcheck", "http", 60, 3),
    )
    own = labels("flower")
    # One replica: each Flower keeps its own picture of the cluster in memory.
    return [
        deployment(FLOWER, own, pod_spec(main), replicas=1, strategy=ROLLING),
        service(FLOWER, own, FLOWER_PORT),
    ]


def exporter() -> list[Manifest]:
    """`fleetline exporter`: the fleet-wide gauges (queue depths over every priority list,
    breakers, spend) read from Redis at each scrape, for Prometheus and KEDA's Prometheus
    scaler. One replica: every one would report the same values."""
    main = container(
        "exporter",
        ["fleetline", "exporter", "--port", str(EXPORTER_PORT)],
        env=[{"name": "FLEETLINE_METRICS_HOST", "value": "0.0.0.0"}],
        ports=[{"name": "http", "containerPort": EXPORTER_PORT}],
        resources=resources("50m", "96Mi", "192Mi"),
        readinessProbe=http_probe("/metrics", "http", 15, 3),
        livenessProbe=http_probe("/metrics", "http", 30, 3),
    )
    own = labels("exporter")
    return [
        deployment(EXPORTER, own, pod_spec(main), replicas=1, strategy=ROLLING),
        service(EXPORTER, own, EXPORTER_PORT),
    ]


def service(name: str, selector: dict[str, str], port: int) -> Manifest:
    """A cluster-internal Service in front of the pods of `selector`."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": selector},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    }
