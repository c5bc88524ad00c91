"""docker-compose.yml, checked statically: every queue is served, workers scale, one beat."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetline.shared.names import WorkerType

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    # safe_load resolves the `<<:` merge keys the file uses for its shared block.
    spec = yaml.safe_load(COMPOSE.read_text())
    result: dict[str, dict[str, Any]] = spec["services"]
    return result


def argv(service: dict[str, Any]) -> list[str]:
    """The service's command as words; a `sh -c SCRIPT` wrapper is looked through."""
    command = service.get("command", [])
    args = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
    if len(args) == 3 and args[0] in ("sh", "bash") and args[1] == "-c":
        return shlex.split(args[2])
    return args


def celery_role(service: dict[str, Any]) -> str | None:
    """`worker`, `beat` or `flower` for a celery command, else None."""
    args = argv(service)
    if "celery" not in args:
        return None
    rest = args[args.index("celery") + 1 :]
    return next((a for a in rest if a in ("worker", "beat", "flower")), None)


def queues(service: dict[str, Any]) -> list[str]:
    args = argv(service)
    for i, arg in enumerate(args):
        if arg in ("-Q", "--queues") and i + 1 < len(args):
            return args[i + 1].split(",")
        if arg.startswith("--queues="):
            return arg.split("=", 1)[1].split(",")
    return []


def workers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if celery_role(s) == "worker"}


def fleetline_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every service that runs the fleetline image (all but Redis itself)."""
    return {
        n: s
        for n, s in services.items()
        if "build" in s or str(s.get("image", "")).startswith("fleetline")
    }


@pytest.mark.parametrize("worker_type", list(WorkerType))
def test_each_worker_type_has_a_service_on_exactly_its_queue(
    services: dict[str, dict[str, Any]], worker_type: WorkerType
) -> None:
    consuming = {n: queues(s) for n, s in workers(services).items() if worker_type in queues(s)}

    assert consuming, f"no worker service consumes queue {worker_type.value}"
    for name, qs in consuming.items():
        assert qs == [worker_type.value], f"{name} consumes {qs}, not only {worker_type.value}"


def test_every_worker_service_serves_a_known_queue(services: dict[str, dict[str, Any]]) -> None:
    known = {wt.value for wt in WorkerType}
    for name, service in workers(services).items():
        assert queues(service), f"{name} names no queue (-Q)"
        assert set(queues(service)) <= known, f"{name}: unknown queue in {queues(service)}"


def test_worker_services_can_scale(services: dict[str, dict[str, Any]]) -> None:
    for name, service in workers(services).items():
        assert "container_name" not in service, f"{name} has a container_name"
        assert "ports" not in service, f"{name} publishes host ports"
        replicas = service.get("deploy", {}).get("replicas")
        assert replicas in (None, 1), f"{name} pins replicas={replicas}"


def test_exactly_one_beat_and_it_uses_redbeat(services: dict[str, dict[str, Any]]) -> None:
    beats = {n: s for n, s in services.items() if celery_role(s) == "beat"}

    assert len(beats) == 1, f"beat services: {sorted(beats)}"
    (beat,) = beats.values()
    args = argv(beat)
    scheduler = args[args.index("-S") + 1] if "-S" in args else ""
    assert scheduler == "redbeat.RedBeatScheduler"
    assert beat.get("deploy", {}).get("replicas", 1) == 1


def test_every_service_is_told_where_redis_is(services: dict[str, dict[str, Any]]) -> None:
    assert "redis" in services
    assert set(fleetline_services(services)) == set(services) - {"redis"}
    for name, service in fleetline_services(services).items():
        env = service.get("environment", {})
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        assert env.get("FLEETLINE_REDIS_URL") == "redis://redis:6379/0", name


def test_flower_requires_auth_and_is_not_public(services: dict[str, dict[str, Any]]) -> None:
    flowers = [s for s in services.values() if celery_role(s) == "flower"]

    assert len(flowers) == 1
    assert any("--basic-auth" in a for a in argv(flowers[0]))
    for port in flowers[0].get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"Flower published beyond loopback: {port}"


def test_the_dockerfile_referenced_exists(services: dict[str, dict[str, Any]]) -> None:
    builds = [s["build"] for s in services.values() if "build" in s]

    assert builds, "no service builds the fleetline image"
    for build in builds:
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (context / dockerfile).is_file(), f"missing {context / dockerfile}"
