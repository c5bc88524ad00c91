"""docker-compose.yml and its image, checked statically: every agent is served, workers
scale, one beat, Flower needs auth, and the image installs its dependencies first."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from fleetline.shared.fleet import DEFAULT_APP, load_fleet

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "ops" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"
# The example fleet (FLEETLINE_APP's default): the compose file has a worker for each.
EXAMPLE = load_fleet()

Service = dict[str, Any]


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    # safe_load resolves the `<<:` merge keys the file uses for its shared block.
    spec = yaml.safe_load(COMPOSE.read_text())
    result: dict[str, Service] = spec["services"]
    return result


def argv(service: Service) -> list[str]:
    """The service's command as words; a `sh -c SCRIPT` wrapper is looked through."""
    command = service.get("command", [])
    args = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
    if len(args) == 3 and args[0] in ("sh", "bash") and args[1] == "-c":
        return shlex.split(args[2])
    return args


def celery_role(service: Service) -> str | None:
    """`worker`, `beat` or `flower` for a celery command, else None."""
    args = argv(service)
    if "celery" not in args:
        return None
    rest = args[args.index("celery") + 1 :]
    return next((a for a in rest if a in ("worker", "beat", "flower")), None)


def celery_app(service: Service) -> str | None:
    """The module a celery command's `-A`/`--app` names."""
    args = argv(service)
    for i, arg in enumerate(args):
        if arg in ("-A", "--app") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--app="):
            return arg.split("=", 1)[1]
    return None


def worker_agents(service: Service) -> list[str] | None:
    """The `--agents` of a `fleetline worker` command ([] without it), else None."""
    args = argv(service)
    if args[:2] != ["fleetline", "worker"]:
        return None
    for i, arg in enumerate(args):
        if arg == "--agents" and i + 1 < len(args):
            return args[i + 1].split(",")
        if arg.startswith("--agents="):
            return arg.split("=", 1)[1].split(",")
    return []


def workers(services: dict[str, Service]) -> dict[str, Service]:
    """Every service that runs a worker, through `fleetline worker` or raw celery."""
    return {
        n: s
        for n, s in services.items()
        if worker_agents(s) is not None or celery_role(s) == "worker"
    }


def fleetline_services(services: dict[str, Service]) -> dict[str, Service]:
    """Every service that runs the fleetline image (all but Redis itself)."""
    return {
        n: s
        for n, s in services.items()
        if "build" in s or str(s.get("image", "")).startswith("fleetline")
    }


def environment(service: Service) -> dict[str, str | None]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return {k: v for k, _, v in (item.partition("=") for item in env)}
    return dict(env)


def env_files(service: Service) -> list[str]:
    """The paths of a service's env_file, in either of Compose's syntaxes."""
    found = service.get("env_file", [])
    entries = [found] if isinstance(found, str | dict) else list(found)
    return [e["path"] if isinstance(e, dict) else e for e in entries]


# --- workers --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLE.worker_types))
def test_each_agent_and_tool_has_a_worker_service_of_its_own(
    services: dict[str, Service], name: str
) -> None:
    # Named after the agent, so `docker compose up --scale <agent>=N` scales its queue.
    assert name in services, f"no service {name!r} for {name} of fleet {EXAMPLE.name}"
    assert argv(services[name]) == ["fleetline", "worker", "--agents", name]


def test_no_service_runs_a_raw_celery_worker(services: dict[str, Service]) -> None:
    # Pool, concurrency, queues (with housekeeping) and node name come from the fleet's
    # policies through `fleetline worker`, not from flags copied into this file.
    raw = sorted(n for n, s in services.items() if celery_role(s) == "worker")
    assert not raw, f"services running `celery worker` directly: {raw}"


def test_every_worker_service_serves_known_agents(services: dict[str, Service]) -> None:
    known = set(EXAMPLE.worker_types)
    for name, service in workers(services).items():
        agents = worker_agents(service)
        assert agents, f"{name} names no --agents (it would run every agent)"
        assert set(agents) <= known, f"{name}: unknown agents in {agents}"


def test_worker_services_can_scale(services: dict[str, Service]) -> None:
    assert workers(services)
    for name, service in workers(services).items():
        assert "container_name" not in service, f"{name} has a container_name"
        assert "ports" not in service, f"{name} publishes host ports"
        replicas = service.get("deploy", {}).get("replicas")
        assert replicas in (None, 1), f"{name} pins replicas={replicas}"


# --- beat and Flower ------------------------------------------------------------------


def test_exactly_one_beat_and_it_uses_redbeat(services: dict[str, Service]) -> None:
    beats = {n: s for n, s in services.items() if celery_role(s) == "beat"}

    assert len(beats) == 1, f"beat services: {sorted(beats)}"
    (beat,) = beats.values()
    args = argv(beat)
    scheduler = args[args.index("-S") + 1] if "-S" in args else ""
    assert scheduler == "redbeat.RedBeatScheduler"
    assert celery_app(beat) == "fleetline.beat.app"
    assert beat.get("deploy", {}).get("replicas", 1) == 1


def test_celery_commands_name_installed_fleetline_modules(services: dict[str, Service]) -> None:
    # `workers.app` would import only from a checkout, as a second copy of every module.
    for name, service in services.items():
        if celery_role(service) is None:
            continue
        module = celery_app(service)
        assert module, f"{name}: celery without -A"
        assert module.startswith("fleetline."), f"{name}: -A {module} is not under fleetline"
        assert importlib.util.find_spec(module) is not None, f"{name}: no module {module}"


def test_flower_requires_auth_and_is_not_public(services: dict[str, Service]) -> None:
    flowers = [s for s in services.values() if celery_role(s) == "flower"]

    assert len(flowers) == 1
    assert celery_app(flowers[0]) == "fleetline.workers.app"
    assert any("--basic-auth" in a for a in argv(flowers[0]))
    for port in flowers[0].get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"Flower published beyond loopback: {port}"


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
def test_flower_refuses_to_start_without_basic_auth(
    services: dict[str, Service], tmp_path: Path
) -> None:
    (flower,) = [s for s in services.values() if celery_role(s) == "flower"]
    command = flower["command"]
    assert isinstance(command, list)
    assert command[:2] == ["sh", "-c"], "Flower's auth check needs its sh -c wrapper"
    # `$$` is Compose's escape for a `$` the container's shell expands.
    script = command[2].replace("$$", "$")
    # A stand-in `celery` that prints its arguments: the guard is what is under test.
    fake = tmp_path / "celery"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)

    def run(auth: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}"}
        env["FLOWER_BASIC_AUTH"] = auth
        return subprocess.run(
            ["sh", "-c", script], env=env, capture_output=True, text=True, timeout=10, check=False
        )

    refused = run("")
    assert refused.returncode != 0
    assert refused.stdout == "", "celery ran without credentials"
    assert "FLOWER_BASIC_AUTH" in refused.stderr

    started = run("admin:s3cret")
    assert started.returncode == 0, started.stderr
    assert "--basic-auth=admin:s3cret" in started.stdout.splitlines()


# --- settings -------------------------------------------------------------------------


def test_every_service_is_told_where_redis_is(services: dict[str, Service]) -> None:
    assert "redis" in services
    assert set(fleetline_services(services)) == set(services) - {"redis"}
    for name, service in fleetline_services(services).items():
        assert environment(service).get("FLEETLINE_REDIS_URL") == "redis://redis:6379/0", name


def test_every_service_reads_the_shared_env_file(services: dict[str, Service]) -> None:
    # Beat schedules the runs (FLEETLINE_SCHEDULE_RUNS) that workers execute, and all of
    # them enforce the same limits: one settings file for every process.
    for name, service in fleetline_services(services).items():
        assert env_files(service) == [".env"], f"{name}: env_file {env_files(service)}"


def test_every_service_runs_the_app_from_the_environment(services: dict[str, Service]) -> None:
    # One compose file for any fleet: FLEETLINE_APP from the shell or .env, else the example.
    for name, service in fleetline_services(services).items():
        app = environment(service).get("FLEETLINE_APP")
        assert app == f"${{FLEETLINE_APP:-{DEFAULT_APP}}}", f"{name}: FLEETLINE_APP={app}"


def test_provider_keys_come_only_from_the_env_file(services: dict[str, Service]) -> None:
    # `KEY: ${KEY:-}` would set an empty key, which counts as set: calls would fail on auth
    # instead of the worker refusing at once with "FLEETLINE_..._API_KEY is not set".
    for name, service in services.items():
        keys = sorted(k for k in environment(service) if k.endswith("_API_KEY"))
        assert not keys, f"{name} sets {keys} in `environment`"


# --- the image ------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        word, _, rest = (pending + line).partition(" ")
        result.append((word.upper(), rest.strip()))
        pending = ""
    return result


def copy_sources(args: str) -> list[str]:
    """The context paths a COPY copies (its flags and destination dropped)."""
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    words = [w for w in words if not w.startswith("--")]
    return [w.removeprefix("./").rstrip("/") for w in words[:-1]]


def wheel_inputs() -> set[str]:
    """What the wheel is built from: pyproject.toml, the readme, every mapped folder."""
    project = tomllib.loads(PYPROJECT.read_text())
    folders = project["tool"]["setuptools"]["package-dir"].values()
    return {"pyproject.toml", project["project"]["readme"], *(f.split("/")[0] for f in folders)}


def test_the_dockerfile_installs_dependencies_before_the_source() -> None:
    steps = instructions()
    sources = wheel_inputs() - {"pyproject.toml"}
    copies = [i for i, (word, _) in enumerate(steps) if word == "COPY"]
    first_source = next((i for i in copies if set(copy_sources(steps[i][1])) & sources), None)
    assert first_source is not None, f"the Dockerfile never copies {sorted(sources)}"
    installs = [i for i, (word, args) in enumerate(steps) if word == "RUN" and "pip " in args]

    deps = [i for i in installs if i < first_source]
    assert deps, "no pip install before the source is copied"
    for i in copies:
        if i < deps[0]:
            assert copy_sources(steps[i][1]) == ["pyproject.toml"], (
                f"the dependency layer also depends on {copy_sources(steps[i][1])}"
            )
    package = [i for i in installs if i > first_source]
    assert package, "the source is never installed"
    assert "--no-deps" in steps[package[-1]][1], "the package install re-resolves dependencies"


def test_the_dockerfile_copies_what_the_wheel_is_built_from() -> None:
    steps = instructions()
    last_install = max(i for i, (w, a) in enumerate(steps) if w == "RUN" and "pip " in a)
    copied = {
        src for i, (word, args) in enumerate(steps[:last_install]) if word == "COPY"
        for src in copy_sources(args)
    }  # fmt: skip
    assert wheel_inputs() <= copied, f"not copied: {sorted(wheel_inputs() - copied)}"
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: no such path in the build context"


def test_the_image_runs_fleetline_unprivileged() -> None:
    steps = instructions()

    def last(instruction: str) -> list[str]:
        found = [args for word, args in steps if word == instruction]
        if not found:
            return []
        return json.loads(found[-1]) if found[-1].startswith("[") else shlex.split(found[-1])

    # What `docker run IMAGE` runs: the ENTRYPOINT, if any, given the CMD as arguments.
    command = last("ENTRYPOINT") + last("CMD")
    assert command[:2] == ["fleetline", "worker"], f"the image runs {command}"
    users = [args for word, args in steps if word == "USER"]
    assert users, "the image runs as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def ignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context (last matching pattern wins;
    a pattern that matches a folder leaves out everything in it)."""

    def regex(pattern: str) -> re.Pattern[str]:
        out = ""
        for token in re.findall(r"\*\*/?|\*|\?|\[[^\]]*\]|.", pattern.strip("/")):
            if token.startswith("**"):
                out += "(.*/)?" if token.endswith("/") else ".*"
            elif token == "*":
                out += "[^/]*"
            elif token == "?":
                out += "[^/]"
            elif token.startswith("[") and len(token) > 1:
                out += token
            else:
                out += re.escape(token)
        return re.compile(out)

    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        compiled = regex(pattern.removeprefix("!"))
        if any(compiled.fullmatch(p) for p in prefixes):
            result = not negated
    return result


def test_dockerignore_keeps_local_state_out_of_the_build() -> None:
    patterns = ignore_patterns()
    for path in (".venv", ".git", ".fleetline", "build", ".env"):
        assert ignored(path, patterns), f".dockerignore does not exclude {path}"


def test_dockerignore_keeps_what_the_image_is_built_from() -> None:
    patterns = ignore_patterns()
    for src in sorted(wheel_inputs()):
        root = ROOT / src
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for file in files:
            rel = file.relative_to(ROOT).as_posix()
            if "__pycache__" in rel.split("/"):
                continue
            assert not ignored(rel, patterns), f".dockerignore leaves out {rel}"


def test_the_dockerfile_referenced_exists(services: dict[str, Service]) -> None:
    builds = [s["build"] for s in services.values() if "build" in s]

    assert builds, "no service builds the fleetline image"
    for build in builds:
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (context / dockerfile).is_file(), f"missing {context / dockerfile}"
