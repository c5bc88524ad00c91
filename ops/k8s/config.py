"""The settings every Fleetline pod reads, and how KEDA reaches the fleet's Redis."""

from __future__ import annotations

from ops.k8s.names import (
    CONFIG_MAP,
    KEDA_AUTH,
    KEDA_CONFIG_MAP,
    NAMESPACE,
    REDIS_DB,
    REDIS_HOST,
    REDIS_PASSWORD,
    REDIS_PORT,
    labels,
)
from ops.k8s.pods import Manifest


def redis_url() -> str:
    """FLEETLINE_REDIS_URL without credentials: the password is a file of its own."""
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"


def keda_redis_address() -> str:
    """The same Redis as KEDA's operator sees it: from its own namespace, so by the
    Service's full name."""
    return f"{REDIS_HOST}.{NAMESPACE}.svc.cluster.local:{REDIS_PORT}"


def settings_config_map(app: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "labels": labels("config")},
        "data": {
            "FLEETLINE_APP": app,
            "FLEETLINE_REDIS_URL": redis_url(),
            "FLEETLINE_LOG_LEVEL": "INFO",
        },
    }


def keda_config_map() -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": KEDA_CONFIG_MAP, "labels": labels("autoscaling")},
        "data": {"address": keda_redis_address()},
    }


def keda_trigger_authentication() -> Manifest:
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": {"name": KEDA_AUTH, "labels": labels("autoscaling")},
        "spec": {
            "configMapTargetRef": [
                {"parameter": "address", "name": KEDA_CONFIG_MAP, "key": "address"}
            ],
            # The Secret the Fleetline processes read: one password to rotate.
            "secretTargetRef": [
                {
                    "parameter": "password",
                    "name": REDIS_PASSWORD.secret,
                    "key": REDIS_PASSWORD.key,
                }
            ],
        },
    }
