"""The pod every Fleetline role runs in: the image, unprivileged, settings from the
ConfigMap, secrets as files; and the probe and resource shapes the roles share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ops.k8s.names import (
    CONFIG_MAP,
    IMAGE,
    REDIS_PASSWORD,
    SECRETS_ROOT,
    UID,
    SecretFile,
    secret_dir,
)

Manifest = dict[str, Any]


def python_probe(code: str, period_s: int, failures: int, timeout_s: int = 15) -> Manifest:
    """A probe that runs `python -c code` in the container (the image has no curl)."""
    return {
        "exec": {"command": ["python", "-c", code]},
        "periodSeconds": period_s,
        "timeoutSeconds": timeout_s,
        "failureThreshold": failures,
    }


def http_probe(path: str, port: str, period_s: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period_s,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def resources(cpu: str, memory: str, memory_limit: str) -> Manifest:
    """Requests, and a memory limit only: a CPU limit throttles a busy pod (its probes
    too) while cores sit idle; a memory limit makes a leaking pod the one OOM-killed,
    rather than whatever else runs on its node."""
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory_limit}}


def container(
    name: str,
    command: list[str],
    *,
    secret_files: Sequence[SecretFile] = (),
    env: Sequence[Manifest] = (),
    mounts: Sequence[Manifest] = (),
    **fields: Any,
) -> Manifest:
    """A Fleetline container: the shared settings, the Redis password file, and the
    `secret_files` given (each as `<NAME>_FILE`, the file under its Secret's folder)."""
    files = [REDIS_PASSWORD, *secret_files]
    secrets = sorted({f.secret for f in files})
    return {
        "name": name,
        "image": IMAGE,
        "command": list(command),
        "envFrom": [{"configMapRef": {"name": CONFIG_MAP}}],
        "env": [{"name": f.variable, "value": f.path} for f in files] + list(env),
        **fields,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            *({"name": s, "mountPath": secret_dir(s), "readOnly": True} for s in secrets),
            {"name": "tmp", "mountPath": "/tmp"},
            *mounts,
        ],
    }


def pod_spec(
    main: Manifest, *, grace_s: int | None = None, volumes: Sequence[Manifest] = ()
) -> Manifest:
    """The pod around `main`: a volume for each Secret it mounts, a scratch /tmp (the
    root filesystem is read-only), and `volumes`."""
    secrets = [m["name"] for m in main["volumeMounts"] if m["mountPath"].startswith(SECRETS_ROOT)]
    spec: Manifest = {}
    if grace_s is not None:
        spec["terminationGracePeriodSeconds"] = grace_s
    spec |= {
        # Fleetline never calls the Kubernetes API.
        "automountServiceAccountToken": False,
        # Service links would put FLEETLINE_API_PORT=tcp://... (from the fleetline-api
        # Service) and the like into every pod, under the settings' own prefix.
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [main],
        "volumes": [
            # 0o440 (r--r-----): the files are root's, readable by the fsGroup.
            *({"name": s, "secret": {"secretName": s, "defaultMode": 0o440}} for s in secrets),
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            *volumes,
        ],
    }
    return spec


def deployment(
    name: str,
    labels: dict[str, str],
    pod: Manifest,
    *,
    replicas: int | None,
    strategy: Manifest,
    annotations: dict[str, str] | None = None,
) -> Manifest:
    """A Deployment selecting its pods by `labels`; `replicas` None leaves the count to
    an autoscaler (a re-apply that sets one would reset what it chose)."""
    spec: Manifest = {} if replicas is None else {"replicas": replicas}
    spec |= {
        "revisionHistoryLimit": 3,
        "selector": {"matchLabels": labels},
        "strategy": strategy,
        "template": {"metadata": {"labels": labels}, "spec": pod},
    }
    metadata: Manifest = {"name": name, "labels": labels}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}


def disruption_budget(name: str, labels: dict[str, str]) -> Manifest:
    """One pod of `labels` at a time may be evicted (a node drain, an upgrade).
    maxUnavailable, not minAvailable: with one replica a minAvailable of 1 would block
    every drain of its node."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": labels},
            # A pod that is not ready does no work: evicting it must not wait.
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
