"""Per agent and tool: a worker Deployment running `fleetline worker --agents NAME`, its
PodDisruptionBudget, and a KEDA ScaledObject scaling it on its queue's depth."""

from __future__ import annotations

import math

from fleetline.producer.cli_local import STOP_MARGIN_S
from fleetline.shared.celery_app import PRIORITY_STEPS, priority_lists
from fleetline.shared.policy import WorkerPolicy
from fleetline.shared.settings import FleetlineSettings
from ops.k8s.names import (
    KEDA_AUTH,
    PROVIDER_KEYS,
    REDIS_DB,
    SPOOL_DIR,
    WORKER,
    labels,
    worker_name,
)
from ops.k8s.pods import Manifest, container, deployment, pod_spec, python_probe, resources

# The image's HEALTHCHECK (ops/Dockerfile), which Kubernetes ignores: a Celery node of this
# pod (`<agents>@<pod name>`, the hostname) answers a ping through Redis. The consumer
# answers, not the pool, so busy threads do not fail it. About 0.6 s of CPU per run.
WORKER_PING = (
    "import socket, sys; from fleetline.workers.app import app; "
    "sys.exit(0 if app.control.ping(pattern='*@' + socket.gethostname(), matcher='glob', "
    "limit=1, timeout=5.0) else 1)"
)

# Every worker also consumes fleetline.housekeeping (deadline watchdog, kill switches,
# scheduled runs), and a cold start takes longer than an interactive job's whole deadline:
# no agent scales to zero.
MIN_REPLICAS = 1
MAX_REPLICAS = 10


def trigger_name(step: int) -> str:
    """The name of the trigger on the list of priority `step`, as the formula reads it."""
    return f"priority_{step}"


def grace_period_s(settings: FleetlineSettings) -> int:
    """From SIGTERM (the worker drains: no new messages, the steps in hand finish) to
    SIGKILL: the fleet's longest time limit plus the margin `fleetline up` gives."""
    longest = max(p.time_limit_s for p in settings.policies.values())
    return math.ceil(longest + STOP_MARGIN_S)


def scaling_target(policy: WorkerPolicy) -> int:
    """Messages waiting per replica: what one replica takes in at once."""
    return policy.concurrency


def worker_resources(policy: WorkerPolicy) -> Manifest:
    """A threads, gevent or solo pool is one process (its GIL holds it to about a core);
    a prefork pool is a process per slot."""
    n = policy.concurrency if policy.pool == "prefork" else 1
    return resources(f"{250 * n}m", f"{256 * n}Mi", f"{1024 * n}Mi")


def worker_deployment(worker_type: str, policy: WorkerPolicy, grace_s: int) -> Manifest:
    main = container(
        WORKER,
        # Pool, concurrency, queues (its own and housekeeping), node name and log level
        # come from the settings through `fleetline worker`, which execs the Celery
        # worker: it is PID 1 and SIGTERM reaches it. FLEETLINE_WORKER_PROCESSES=N in the
        # ConfigMap runs N of them per pod instead (PID 1 supervises and drains them all
        # on SIGTERM); raise the pod's CPU with it, a threads pool uses about one core.
        ["fleetline", "worker", "--agents", worker_type],
        # Only workers call models, so only they get the keys.
        secret_files=PROVIDER_KEYS,
        # Here, not in the ConfigMap: it must be where the volume below is mounted.
        env=[{"name": "FLEETLINE_SPOOL_DIR", "value": SPOOL_DIR}],
        mounts=[{"name": "spool", "mountPath": SPOOL_DIR}],
        resources=worker_resources(policy),
        # Up to 5 minutes to start (Redis may still be coming up); then out of the
        # rollout's count after a minute without a pong, and restarted after 5: long
        # enough to ride out a Redis failover, which a restart would not fix anyway.
        startupProbe=python_probe(WORKER_PING, 10, 30),
        readinessProbe=python_probe(WORKER_PING, 30, 2),
        livenessProbe=python_probe(WORKER_PING, 60, 5),
    )
    # Outlives a container restart (a crash, an OOM kill), so the restarted worker
    # settles what the killed one billed; not the pod.
    spool = {"name": "spool", "emptyDir": {"sizeLimit": "256Mi"}}
    return deployment(
        worker_name(worker_type),
        labels(WORKER, worker_type),
        pod_spec(main, grace_s=grace_s, volumes=[spool]),
        # The ScaledObject's HPA owns the count.
        replicas=None,
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
    )


def worker_scaled_object(worker_type: str, policy: WorkerPolicy) -> Manifest:
    name = worker_name(worker_type)
    # A worker type's queue is named after it (shared/names.py).
    triggers = [
        {
            "type": "redis",
            "name": trigger_name(step),
            # No listLength: with a formula, the HPA's target is the formula's.
            "metadata": {"listName": listed, "databaseIndex": str(REDIS_DB)},
            "authenticationRef": {"name": KEDA_AUTH},
        }
        for step, listed in zip(PRIORITY_STEPS, priority_lists(worker_type), strict=True)
    ]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "labels": labels(WORKER, worker_type)},
        "spec": {
            "scaleTargetRef": {"name": name},
            # No pollingInterval: above zero replicas the HPA polls (KEDA warns it is unused).
            "minReplicaCount": MIN_REPLICAS,
            "maxReplicaCount": MAX_REPLICAS,
            "advanced": {
                "horizontalPodAutoscalerConfig": {
                    "behavior": {
                        "scaleDown": {
                            "stabilizationWindowSeconds": 300,
                            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
                        }
                    }
                },
                "scalingModifiers": {
                    "formula": " + ".join(str(t["name"]) for t in triggers),
                    "target": str(scaling_target(policy)),
                    "metricType": "AverageValue",
                },
            },
            "triggers": triggers,
        },
    }


def prometheus_trigger(worker_type: str, policy: WorkerPolicy, server: str) -> Manifest:
    """The one trigger that replaces the per-list ones where a Prometheus scrapes
    `fleetline_queue_depth{queue}` (every priority list of the queue, plus its unacked
    messages): a target per replica that counts the work in hand too."""
    return {
        "type": "prometheus",
        "name": "queue_depth",
        "metadata": {
            "serverAddress": server,
            "query": f'sum(fleetline_queue_depth{{queue="{worker_type}"}})',
            "threshold": str(scaling_target(policy)),
        },
    }
