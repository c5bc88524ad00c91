"""ops/k8s, checked statically: the committed files are what render.py writes; every
manifest of the base and of the overlays (built here as kustomize builds them) is valid
for Kubernetes and, for KEDA's kinds, for KEDA's own CRD schema; and the manifests say
what the fleet needs: a worker per agent and tool, scaled on every priority list of its
queue, a grace above the longest time limit, one beat, Flower behind auth, the API with
its probes, and secrets only as files, provider keys to the workers only."""

from __future__ import annotations

import base64
import copy
import functools
import importlib.util
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
from kombu.transport.redis import Channel as KombuChannel
from starlette.testclient import TestClient

from fleetline.examples.research import fleet as EXAMPLE
from fleetline.producer.cli_local import STOP_MARGIN_S
from fleetline.producer.http_api import make_api
from fleetline.shared.celery_app import PRIORITY_STEPS, make_celery
from fleetline.shared.errors import ConfigError
from fleetline.shared.fleet import DEFAULT_APP
from fleetline.shared.secret_files import SECRET_SETTINGS
from fleetline.shared.settings import FleetlineSettings, ProviderSettings, load_settings
from ops.k8s import render
from ops.k8s.kustomize import Unsupported, build, json_patch
from ops.k8s.names import FLOWER_SECRET, PROVIDERS_SECRET, worker_name

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "ops" / "k8s"
DOCKERFILE = ROOT / "ops" / "Dockerfile"
# The oldest Kubernetes KEDA 2.20 (whose CRDs ops/k8s/schemas holds) is tested on.
K8S_VERSION = "1.33.0"
SCHEMAS = K8S / "schemas"
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCHEMAS / "keda-scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): SCHEMAS / "keda-triggerauthentication.json",
}
BUILDS = ("base", "overlays/example", "overlays/prometheus")
OVERLAYS = BUILDS[1:]
# What an operator writes before `kubectl apply -k ops/k8s/overlays/example` (with
# printf, as its kustomization says: no final newline).
SECRET_FILES = {
    "redis-password": secrets.token_hex(16),
    "flower-basic-auth": f"admin:{secrets.token_hex(8)}",
}
WORKLOADS = ("Deployment", "StatefulSet")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")

Manifest = dict[str, Any]


# --- the trees and their builds ---------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ops/k8s with the example overlay's secret files written."""
    copied = tmp_path_factory.mktemp("ops") / "k8s"
    shutil.copytree(K8S, copied, ignore=shutil.ignore_patterns("__pycache__"))
    for name, text in SECRET_FILES.items():
        (copied / "overlays" / "example" / "secrets" / name).write_text(text)
    return copied


@pytest.fixture(scope="module")
def builds(tree: Path) -> dict[str, list[Manifest]]:
    return {name: build(tree / name) for name in BUILDS}


@pytest.fixture(params=BUILDS)
def manifests(request: pytest.FixtureRequest, builds: dict[str, list[Manifest]]) -> list[Manifest]:
    return builds[request.param]


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, builds: dict[str, list[Manifest]]) -> list[Manifest]:
    return builds[request.param]


@pytest.fixture
def bound() -> FleetlineSettings:
    """The example fleet's settings from a clean environment (conftest clears FLEETLINE_)."""
    return FleetlineSettings().bind(EXAMPLE)


def of_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    (found,) = [m for m in of_kind(manifests, kind) if m["metadata"]["name"] == name]
    return found


def containers(manifests: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    """(workload, container) for every container of every Deployment and StatefulSet."""
    for m in manifests:
        if m["kind"] in WORKLOADS:
            for c in m["spec"]["template"]["spec"]["containers"]:
                yield m, c


def script(container: Manifest) -> list[str]:
    """The container's command as words; a `sh -c SCRIPT` wrapper is looked through."""
    args = [*container.get("command", []), *container.get("args", [])]
    if args[:2] == ["sh", "-c"]:
        return shlex.split(args[2].replace(";", " ; "))
    return args


def is_fleetline(container: Manifest) -> bool:
    return container["image"].split(":")[0].endswith("fleetline")


def worker_deployments(manifests: list[Manifest]) -> dict[str, Manifest]:
    """The Deployments running `fleetline worker --agents NAME`, by NAME."""
    found = {}
    for d, c in containers(manifests):
        args = script(c)
        if args[:2] == ["fleetline", "worker"]:
            assert args[2] == "--agents" and len(args) == 4, f"{d['metadata']['name']}: {args}"
            assert args[3] not in found, f"two Deployments run {args[3]}"
            found[args[3]] = d
    return found


def role(manifests: list[Manifest], words: list[str]) -> list[tuple[Manifest, Manifest]]:
    """(workload, container) of the containers whose command holds `words` in a row."""
    n = len(words)
    return [
        (d, c)
        for d, c in containers(manifests)
        if any(script(c)[i : i + n] == words for i in range(len(script(c))))
    ]


def pod_labels(workload: Manifest) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def secret_values(manifests: list[Manifest]) -> dict[tuple[str, str], str]:
    """Every Secret's values, by (Secret, key)."""
    found = {}
    for s in of_kind(manifests, "Secret"):
        for key, value in s.get("data", {}).items():
            found[s["metadata"]["name"], key] = base64.b64decode(value).decode()
        for key, value in s.get("stringData", {}).items():
            found[s["metadata"]["name"], key] = value
    return found


def config_data(manifests: list[Manifest], name: str = "fleetline-config") -> dict[str, str]:
    data: dict[str, str] = named(manifests, "ConfigMap", name)["data"]
    return data


def kombu_lists(queue: str) -> list[str]:
    """The lists kombu's own Redis transport code names for `queue`, step by step."""
    channel = types.SimpleNamespace(sep=KombuChannel.sep, priority_steps=PRIORITY_STEPS)
    channel.priority = functools.partial(KombuChannel.priority, channel)
    return [KombuChannel._q_for_pri(channel, queue, step) for step in PRIORITY_STEPS]


# --- the generator ----------------------------------------------------------------------


def test_the_committed_files_are_what_render_writes(bound: FleetlineSettings) -> None:
    files = render.render(bound, DEFAULT_APP)
    assert render.differences(K8S, files) == [], "run `python -m ops.k8s.render`"
    assert render.main(["--check"]) == 0


def test_render_check_fails_on_an_edited_or_stale_file(tmp_path: Path) -> None:
    shutil.copytree(K8S, tmp_path / "k8s", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "k8s"
    edited = out / "base" / f"{worker_name('extraction')}.yaml"
    edited.write_text(edited.read_text().replace("terminationGracePeriodSeconds", "x"))
    (out / "base" / "worker-gone.yaml").write_text(render.GENERATED + "\n")
    assert render.main(["--check", "--out", str(out)]) == 1
    assert render.main(["--out", str(out)]) == 0
    assert not (out / "base" / "worker-gone.yaml").exists()
    assert render.main(["--check", "--out", str(out)]) == 0


def test_the_grace_follows_the_fleets_policies(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not a number written down: raise one agent's time limit and every worker's grace
    # follows, as `fleetline up` stops every worker within the longest limit + 15 s.
    monkeypatch.setenv("FLEETLINE_WORKERS__SYNTHESIS__TIME_LIMIT_S", "200")
    settings = load_settings(DEFAULT_APP)
    files = render.render_base(settings, DEFAULT_APP)
    for name in EXAMPLE.worker_types:
        text = files[f"base/{worker_name(name)}.yaml"]
        assert "terminationGracePeriodSeconds: 215\n" in text, name


# --- validity ---------------------------------------------------------------------------


def strict(schema: Any) -> Any:
    """The CRD schema as the API server applies it: kubectl's strict field validation
    refuses fields the schema does not know (unless it keeps unknown fields)."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    result = {k: strict(v) for k, v in schema.items()}
    open_ended = "additionalProperties" in schema or schema.get(
        "x-kubernetes-preserve-unknown-fields"
    )
    if "properties" in schema and not open_ended:
        result["additionalProperties"] = False
    return result


@functools.cache
def crd_validator(path: Path) -> jsonschema.Draft202012Validator:
    schema = strict(json.loads(path.read_text()))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def validate(manifest: Manifest) -> None:
    """Raise if the API server would refuse `manifest` (KEDA's kinds: its CRD schema,
    the CRD's one CEL rule and the webhook's checks of triggers and formula)."""
    crd = CRD_SCHEMAS.get((manifest["apiVersion"], manifest["kind"]))
    if crd is None:
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
        return
    crd_validator(crd).validate(manifest)
    if manifest["kind"] == "ScaledObject":
        spec = manifest["spec"]
        assert spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100)
        names = [t["name"] for t in spec["triggers"] if "name" in t]
        assert len(names) == len(set(names)), f"trigger names repeat: {names}"
        modifiers = spec.get("advanced", {}).get("scalingModifiers")
        if modifiers:
            used = set(re.findall(r"[A-Za-z_]\w*", modifiers["formula"]))
            assert used <= set(names), f"the formula names no trigger {used - set(names)}"
            assert float(modifiers["target"]) > 0


def test_every_manifest_is_valid(manifests: list[Manifest]) -> None:
    assert manifests
    for manifest in manifests:
        validate(manifest)


def test_the_validation_catches_mistakes(builds: dict[str, list[Manifest]]) -> None:
    base = builds["base"]
    deployment = copy.deepcopy(worker_deployments(base)["extraction"])
    deployment["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    scaled = copy.deepcopy(named(base, "ScaledObject", worker_name("extraction")))
    advanced = scaled["spec"]["advanced"]
    advanced["scalingModifier"] = advanced.pop("scalingModifiers")
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)
    scaled = copy.deepcopy(named(base, "ScaledObject", worker_name("extraction")))
    scaled["spec"]["advanced"]["scalingModifiers"]["formula"] += " + priority_10"
    with pytest.raises(AssertionError, match="formula"):
        validate(scaled)


def test_names_and_labels_are_valid(manifests: list[Manifest]) -> None:
    # The schemas leave names to the API server's own checks: a `_` from an agent's name
    # would pass them and be refused there.
    for m in manifests:
        name = m["metadata"]["name"]
        assert DNS_SUBDOMAIN.fullmatch(name) and len(name) <= 253, name
        if m["kind"] in ("Service", "Namespace"):
            assert DNS_LABEL.fullmatch(name) and len(name) <= 63, name
        for value in [*m["metadata"].get("labels", {}).values()]:
            assert LABEL_VALUE.fullmatch(value) and len(value) <= 63, f"{name}: {value}"


def test_worker_names_fit_every_agent_name() -> None:
    longest = "a" + "_b" * 23 + "c"  # 48 characters, the longest agent name allowed
    name = worker_name(longest)
    assert DNS_LABEL.fullmatch(name) and len(name) <= 63
    assert worker_name("a_b") != worker_name("ab")
    with pytest.raises(ConfigError):
        worker_name("trailing_")


# --- workers and their scaling ----------------------------------------------------------


def test_the_workers_are_the_fleets_agents_and_tools(manifests: list[Manifest]) -> None:
    assert set(worker_deployments(manifests)) == set(EXAMPLE.worker_types)


@pytest.mark.parametrize("worker_type", sorted(EXAMPLE.worker_types))
def test_each_agent_scales_on_every_priority_list_of_its_queue(
    builds: dict[str, list[Manifest]], bound: FleetlineSettings, worker_type: str
) -> None:
    for name in ("base", "overlays/example"):
        found = builds[name]
        deployment = worker_deployments(found)[worker_type]
        (scaled,) = [
            s
            for s in of_kind(found, "ScaledObject")
            if s["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        ]
        assert scaled["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
        triggers = scaled["spec"]["triggers"]
        assert {t["type"] for t in triggers} == {"redis"}
        # A worker type's queue is named after it; the lists are kombu's, step by step.
        listed = [t["metadata"]["listName"] for t in triggers]
        assert sorted(listed) == sorted(kombu_lists(worker_type)), listed
        modifiers = scaled["spec"]["advanced"]["scalingModifiers"]
        terms = [t.strip() for t in modifiers["formula"].split("+")]
        assert sorted(terms) == sorted(t["name"] for t in triggers), "not the sum of the lists"
        assert modifiers.get("metricType", "AverageValue") == "AverageValue"
        assert int(modifiers["target"]) == bound.worker(worker_type).concurrency
        auths = {a["metadata"]["name"] for a in of_kind(found, "TriggerAuthentication")}
        assert all(t["authenticationRef"]["name"] in auths for t in triggers)


def test_every_priority_lands_on_a_watched_list(monkeypatch: pytest.MonkeyPatch) -> None:
    # The triggers watch the lists of PRIORITY_STEPS: right only while the app gives
    # kombu those steps, and while every priority a message may carry maps onto one.
    monkeypatch.setenv("FLEETLINE_REDIS_URL", "redis://127.0.0.1:1/0")
    app = make_celery(load_settings(DEFAULT_APP), send_only=True)
    assert app.conf.broker_transport_options["priority_steps"] == PRIORITY_STEPS
    channel = types.SimpleNamespace(priority_steps=PRIORITY_STEPS)
    for priority in range(10):
        assert KombuChannel.priority(channel, priority) in PRIORITY_STEPS


def test_the_prometheus_variant_scales_each_agent_on_its_queue_depth(
    builds: dict[str, list[Manifest]], bound: FleetlineSettings
) -> None:
    found = builds["overlays/prometheus"]
    for worker_type, deployment in worker_deployments(found).items():
        scaled = named(found, "ScaledObject", deployment["metadata"]["name"])
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "prometheus"
        assert trigger["metadata"]["query"] == (
            f'sum(fleetline_queue_depth{{queue="{worker_type}"}})'
        )
        assert int(trigger["metadata"]["threshold"]) == bound.worker(worker_type).concurrency
        assert "scalingModifiers" not in scaled["spec"]["advanced"]


def test_workers_are_never_scaled_to_zero(manifests: list[Manifest]) -> None:
    # Every worker also runs the housekeeping queue (deadlines, kill switches).
    for scaled in of_kind(manifests, "ScaledObject"):
        assert scaled["spec"]["minReplicaCount"] >= 1


def test_the_grace_outlasts_the_longest_time_limit(
    manifests: list[Manifest], bound: FleetlineSettings
) -> None:
    longest = max(p.time_limit_s for p in bound.policies.values())
    for name, deployment in worker_deployments(manifests).items():
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > longest, f"{name}: {grace} s grace, a step may last {longest:g} s"
        assert grace >= longest + STOP_MARGIN_S, f"{name}: less than `fleetline up` gives"


def test_worker_deployments_leave_the_count_to_keda(manifests: list[Manifest]) -> None:
    # A `replicas` in the manifest would reset the HPA's choice on every apply.
    for name, deployment in worker_deployments(manifests).items():
        assert "replicas" not in deployment["spec"], name
        strategy = deployment["spec"]["strategy"]
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0, name


def test_workers_spool_on_an_empty_dir_where_the_image_does(manifests: list[Manifest]) -> None:
    image_spool = re.search(r"FLEETLINE_SPOOL_DIR=(\S+)", DOCKERFILE.read_text())
    assert image_spool
    for name, deployment in worker_deployments(manifests).items():
        pod = deployment["spec"]["template"]["spec"]
        (main,) = pod["containers"]
        spool = {e["name"]: e.get("value") for e in main["env"]}["FLEETLINE_SPOOL_DIR"]
        assert spool == image_spool[1], name
        (mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == spool]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert "emptyDir" in volume, f"{name}: the spool is not an emptyDir"


def test_the_worker_probe_is_the_images_health_check(manifests: list[Manifest]) -> None:
    found = re.search(r"^HEALTHCHECK\b.*?\bCMD (\[[^\n]*\])", DOCKERFILE.read_text(), re.M | re.S)
    assert found
    command = json.loads(found[1])
    for name, deployment in worker_deployments(manifests).items():
        (main,) = deployment["spec"]["template"]["spec"]["containers"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert main[probe]["exec"]["command"] == command, f"{name}: {probe}"


# --- beat, the API, Flower --------------------------------------------------------------


def test_exactly_one_beat_recreated_not_rolled(manifests: list[Manifest]) -> None:
    (found,) = role(manifests, ["celery", "-A", "fleetline.beat.app", "beat"])
    beat, main = found
    args = script(main)
    assert args[args.index("-S") + 1] == "redbeat.RedBeatScheduler"
    assert importlib.util.find_spec("fleetline.beat.app") is not None
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    targets = {s["spec"]["scaleTargetRef"]["name"] for s in of_kind(manifests, "ScaledObject")}
    assert beat["metadata"]["name"] not in targets, "beat is autoscaled"


def test_the_api_serves_with_its_probes_behind_a_service(manifests: list[Manifest]) -> None:
    (found,) = role(manifests, ["fleetline", "serve"])
    api, main = found
    assert script(main) == ["fleetline", "serve", "--host", "0.0.0.0", "--port", "8077"]
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports[main["readinessProbe"]["httpGet"]["port"]] == 8077
    assert main["readinessProbe"]["httpGet"]["path"] == "/v1/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/v1/healthz"
    services = [
        s for s in of_kind(manifests, "Service") if selects(s["spec"]["selector"], pod_labels(api))
    ]
    (service,) = services
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert [ports.get(p["targetPort"], p["targetPort"]) for p in service["spec"]["ports"]] == [8077]
    others = [w for w, _ in containers(manifests) if w is not api]
    assert not any(selects(service["spec"]["selector"], pod_labels(w)) for w in others)


def test_the_api_probe_paths_answer_as_the_probes_need(monkeypatch: pytest.MonkeyPatch) -> None:
    # Liveness must not depend on Redis (a restart would not bring it back); readiness
    # must, so that an API that cannot reach Redis leaves the Service.
    monkeypatch.setenv("FLEETLINE_REDIS_URL", "redis://127.0.0.1:1/0")
    with TestClient(make_api(load_settings(DEFAULT_APP))) as client:
        assert client.get("/v1/healthz").status_code == 200
        assert client.get("/v1/readyz").status_code == 503


def flower(manifests: list[Manifest]) -> tuple[Manifest, Manifest]:
    (found,) = role(manifests, ["celery", "-A", "fleetline.workers.app", "flower"])
    return found


def test_flower_takes_its_login_from_a_secret(manifests: list[Manifest]) -> None:
    deployment, main = flower(manifests)
    (auth,) = [e for e in main["env"] if e["name"] == "FLOWER_BASIC_AUTH"]
    ref = auth["valueFrom"]["secretKeyRef"]
    assert ref["name"] == FLOWER_SECRET and not ref.get("optional", False)
    for service in of_kind(manifests, "Service"):
        if selects(service["spec"]["selector"], pod_labels(deployment)):
            assert service["spec"].get("type", "ClusterIP") == "ClusterIP", "Flower is public"
    assert not of_kind(manifests, "Ingress")


def test_the_overlay_gives_flower_a_login(overlay: list[Manifest]) -> None:
    _, main = flower(overlay)
    (auth,) = [e for e in main["env"] if e["name"] == "FLOWER_BASIC_AUTH"]
    ref = auth["valueFrom"]["secretKeyRef"]
    login = secret_values(overlay)[ref["name"], ref["key"]]
    assert login == SECRET_FILES["flower-basic-auth"]


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX sh")
def test_flower_refuses_to_start_without_a_login(
    builds: dict[str, list[Manifest]], tmp_path: Path
) -> None:
    _, main = flower(builds["base"])
    assert main["command"][:2] == ["sh", "-c"]
    fake = tmp_path / "celery"  # prints its arguments: the guard is what is under test
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)

    def run(auth: str) -> subprocess.CompletedProcess[str]:
        env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}"}
        env["FLOWER_BASIC_AUTH"] = auth
        return subprocess.run(
            main["command"], env=env, capture_output=True, text=True, timeout=10, check=False
        )

    for login in ("", "admin:s3cret\n"):
        refused = run(login)
        assert refused.returncode != 0 and refused.stdout == "", f"celery ran with {login!r}"
        assert "FLOWER_BASIC_AUTH" in refused.stderr
    started = run("admin:s3cret")
    assert started.returncode == 0, started.stderr
    assert "flower" in started.stdout.split() and "s3cret" not in started.stdout


def test_flower_reads_its_login_from_the_environment() -> None:
    # What lets the login stay off the command line: Flower's FLOWER_ variables.
    code = (
        "from flower.command import apply_env_options; from flower.options import options; "
        "apply_env_options(); print(options.basic_auth)"
    )
    env = {**os.environ, "FLOWER_BASIC_AUTH": "admin:s3cret"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['admin:s3cret']"


# --- secrets, probes, budgets -----------------------------------------------------------


def provider_variables() -> set[str]:
    prefix = ProviderSettings.model_config.get("env_prefix", "")
    names = {f"{prefix}{field}".upper() for field in ProviderSettings.model_fields}
    return names | {f"{n}_FILE" for n in names}


def test_no_secret_is_written_into_a_manifest(manifests: list[Manifest]) -> None:
    values = set(secret_values(manifests).values())
    secret_names = {*SECRET_SETTINGS, "FLOWER_BASIC_AUTH", "REDISCLI_AUTH"}
    for workload, c in containers(manifests):
        where = f"{workload['metadata']['name']}/{c['name']}"
        for env in c.get("env", []):
            if "value" in env:
                assert env["name"] not in secret_names, f"{where}: {env['name']} inlined"
                assert env["value"] not in values, f"{where}: {env['name']} holds a secret"
        words = json.dumps([c.get("command", []), c.get("args", [])])
        assert not any(v in words for v in values), f"{where}: a secret in its command"
    for config in of_kind(manifests, "ConfigMap"):
        for key, value in config["data"].items():
            assert key not in secret_names - {"FLEETLINE_REDIS_URL"}, key
            assert not any(v in value for v in values), f"{key} holds a secret"
    url = urlsplit(config_data(manifests)["FLEETLINE_REDIS_URL"])
    assert url.username is None and url.password is None, "credentials in the ConfigMap"


def test_secret_settings_are_read_from_mounted_secret_files(manifests: list[Manifest]) -> None:
    values = secret_values(manifests)
    for workload, c in containers(manifests):
        if not is_fleetline(c):
            continue
        pod = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
        files = {e["name"]: e["value"] for e in c["env"] if e["name"].endswith("_FILE")}
        assert "FLEETLINE_REDIS_PASSWORD_FILE" in files, workload["metadata"]["name"]
        for variable, path in files.items():
            assert variable.removesuffix("_FILE") in SECRET_SETTINGS, variable
            folder, _, key = path.rpartition("/")
            secret = mounts[folder]["secret"]["secretName"]
            if values:  # an overlay: the Secret exists and holds the key
                assert (secret, key) in values, f"{variable}: no key {key} in {secret}"


def test_provider_keys_reach_only_the_workers(manifests: list[Manifest]) -> None:
    workers = {d["metadata"]["name"] for d in worker_deployments(manifests).values()}
    for workload, c in containers(manifests):
        pod = workload["spec"]["template"]["spec"]
        mounted = {v.get("secret", {}).get("secretName") for v in pod["volumes"]}
        names = {e["name"] for e in c.get("env", [])}
        if workload["metadata"]["name"] in workers:
            assert PROVIDERS_SECRET in mounted
            continue
        where = workload["metadata"]["name"]
        assert PROVIDERS_SECRET not in mounted, f"{where} mounts the provider keys"
        assert not names & provider_variables(), f"{where} gets {names & provider_variables()}"
        assert not any(n.endswith("_API_KEY") for n in names), where


def test_every_container_has_probes_and_requests(manifests: list[Manifest]) -> None:
    for workload, c in containers(manifests):
        where = f"{workload['metadata']['name']}/{c['name']}"
        assert "livenessProbe" in c, f"{where} has no liveness probe"
        requests = c["resources"]["requests"]
        assert requests.get("cpu") and requests.get("memory"), f"{where}: no requests"
        behind_a_service = any(
            selects(s["spec"]["selector"], pod_labels(workload))
            for s in of_kind(manifests, "Service")
        )
        if behind_a_service or workload["kind"] == "StatefulSet":
            assert "readinessProbe" in c, f"{where} has no readiness probe"


def test_workers_and_the_api_have_a_disruption_budget_that_lets_nodes_drain(
    manifests: list[Manifest],
) -> None:
    budgets = of_kind(manifests, "PodDisruptionBudget")
    covered = [
        *worker_deployments(manifests).values(),
        role(manifests, ["fleetline", "serve"])[0][0],
    ]
    for workload in covered:
        mine = [
            b
            for b in budgets
            if selects(b["spec"]["selector"]["matchLabels"], pod_labels(workload))
        ]
        assert len(mine) == 1, workload["metadata"]["name"]
    for budget in budgets:
        assert budget["spec"].get("maxUnavailable", 1) != 0, "blocks every drain"
        assert "minAvailable" not in budget["spec"], "blocks drains of a single replica"


def test_command_variables_are_defined(manifests: list[Manifest]) -> None:
    # Kubernetes leaves an undefined `$(NAME)` in the command as it is.
    configs = {c["metadata"]["name"]: c["data"] for c in of_kind(manifests, "ConfigMap")}
    for workload, c in containers(manifests):
        defined = {e["name"] for e in c.get("env", [])}
        for source in c.get("envFrom", []):
            defined |= set(configs[source["configMapRef"]["name"]])
        used = re.findall(r"\$\((\w+)\)", json.dumps(c.get("command", [])))
        assert set(used) <= defined, f"{workload['metadata']['name']}: {set(used) - defined}"


# --- the overlays -----------------------------------------------------------------------


def test_keda_reaches_the_redis_and_password_the_fleet_uses(overlay: list[Manifest]) -> None:
    url = urlsplit(config_data(overlay)["FLEETLINE_REDIS_URL"])
    (auth,) = of_kind(overlay, "TriggerAuthentication")
    namespace = auth["metadata"]["namespace"]
    params = {r["parameter"]: r for r in auth["spec"]["configMapTargetRef"]}
    address = config_data(overlay, params["address"]["name"])[params["address"]["key"]]
    # KEDA's operator resolves names from its own namespace.
    host = url.hostname or ""
    expected = host if "." in host else f"{host}.{namespace}.svc.cluster.local"
    assert address == f"{expected}:{url.port}"
    (password,) = auth["spec"]["secretTargetRef"]
    assert (password["name"], password["key"]) == ("fleetline-redis", "password")
    assert secret_values(overlay)["fleetline-redis", "password"] == SECRET_FILES["redis-password"]
    for scaled in of_kind(overlay, "ScaledObject"):
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] == "redis":
                assert trigger["metadata"]["databaseIndex"] == url.path.strip("/")


def test_the_example_overlay_applies_its_namespace_image_and_patches(
    builds: dict[str, list[Manifest]],
) -> None:
    found = builds["overlays/example"]
    (namespace,) = of_kind(found, "Namespace")
    name = namespace["metadata"]["name"]
    assert all(m["metadata"].get("namespace") == name for m in found if m is not namespace)
    images = {c["image"] for _, c in containers(found) if is_fleetline(c)}
    assert images == {"fleetline:0.1.0"}
    maxima = {
        s["spec"]["scaleTargetRef"]["name"]: s["spec"]["maxReplicaCount"]
        for s in of_kind(found, "ScaledObject")
    }
    assert maxima.pop(worker_name("extraction")) == 20
    assert set(maxima.values()) == {10}
    for workload, _ in containers(found):
        assert pod_labels(workload)["app.kubernetes.io/instance"] == "example"


def test_the_config_map_loads_as_the_settings_it_means(
    overlay: list[Manifest], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # As a pod reads it: the ConfigMap's variables, the password from its file.
    for key, value in config_data(overlay).items():
        monkeypatch.setenv(key, value)
    password = tmp_path / "password"
    password.write_text(SECRET_FILES["redis-password"] + "\n")  # Fleetline drops it
    monkeypatch.setenv("FLEETLINE_REDIS_PASSWORD_FILE", str(password))
    settings = load_settings()
    assert settings.app == DEFAULT_APP
    assert settings.redis.password is not None
    assert settings.redis.password.get_secret_value() == SECRET_FILES["redis-password"]
    assert settings.limits.tenant_steps("any") == 20


def test_the_overlay_does_not_build_without_its_secret_files(tmp_path: Path) -> None:
    # As the compose file refuses to start without a password.
    shutil.copytree(K8S, tmp_path / "k8s", ignore=shutil.ignore_patterns("__pycache__"))
    for leftover in (tmp_path / "k8s" / "overlays" / "example" / "secrets").glob("*-*"):
        leftover.unlink()
    with pytest.raises(FileNotFoundError, match="redis-password"):
        build(tmp_path / "k8s" / "overlays" / "example")


# --- the small kustomize ----------------------------------------------------------------


def kustomization(folder: Path, text: str, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(text)
    for name, body in files.items():
        (folder / name.replace("__", ".")).write_text(body)
    return folder


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: app}
spec:
  template:
    spec:
      containers:
        - {name: main, image: "registry:5000/app:1", env: [{name: A, value: "1"}]}
        - {name: side, image: other}
"""


def test_build_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    folder = kustomization(tmp_path, "resources: [d.yaml]\nnamePrefix: x-\n", d__yaml=DEPLOYMENT)
    with pytest.raises(Unsupported, match="namePrefix"):
        build(folder)


def test_build_merges_patches_by_key_and_sets_images(tmp_path: Path) -> None:
    patch = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\n"
        "spec: {template: {spec: {containers: [{name: main, env: [{name: B, value: '2'}]}]}}}\n"
    )
    folder = kustomization(
        tmp_path,
        "resources: [d.yaml]\npatches: [{path: p.yaml}]\nnamespace: ns\n"
        "images: [{name: 'registry:5000/app', newTag: '2'}]\n",
        d__yaml=DEPLOYMENT,
        p__yaml=patch,
    )
    (deployment,) = build(folder)
    main, side = deployment["spec"]["template"]["spec"]["containers"]
    assert main["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert main["image"] == "registry:5000/app:2" and side["image"] == "other"
    assert deployment["metadata"]["namespace"] == "ns"


def test_build_refuses_to_guess_how_a_custom_resources_list_merges(tmp_path: Path) -> None:
    scaled = "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: s}\n"
    body = scaled + "spec: {triggers: [{type: redis, name: a}]}\n"
    patch = scaled + "spec: {triggers: [{type: prometheus, name: b}]}\n"
    folder = kustomization(
        tmp_path, "resources: [s.yaml]\npatches: [{path: p.yaml}]\n", s__yaml=body, p__yaml=patch
    )
    with pytest.raises(Unsupported, match="JSON patch"):
        build(folder)


def test_json_patch_replaces_and_removes() -> None:
    document = {"spec": {"triggers": [{"type": "redis"}], "advanced": {"x": 1, "y": 2}}}
    ops = [
        {"op": "replace", "path": "/spec/triggers", "value": [{"type": "prometheus"}]},
        {"op": "remove", "path": "/spec/advanced/x"},
        {"op": "add", "path": "/spec/triggers/-", "value": {"type": "cron"}},
    ]
    patched = json_patch(document, ops)
    assert patched == {
        "spec": {"triggers": [{"type": "prometheus"}, {"type": "cron"}], "advanced": {"y": 2}}
    }
    with pytest.raises(ValueError, match="no /spec/missing"):
        json_patch(document, [{"op": "remove", "path": "/spec/missing"}])
