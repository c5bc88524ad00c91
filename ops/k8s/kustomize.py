"""A small `kustomize build`, for where there is no kustomize binary (the tests).

It implements only the kustomization fields ops/k8s uses, as kustomize does them:
resources (files and folders), secretGenerator without name hashes, patches (a strategic
merge, or a JSON patch with a target), namespace, labels and images. Anything else
raises Unsupported, so an overlay cannot rely on a feature that would be silently
skipped here. Transformers run in kustomize's order: patches, namespace, labels, images.
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

from ops.k8s.pods import Manifest

KUSTOMIZATION = "kustomization.yaml"
FIELDS = frozenset(
    {
        "apiVersion", "kind", "resources", "secretGenerator", "generatorOptions",
        "patches", "namespace", "labels", "images",
    }
)  # fmt: skip
# Kinds without a namespace (those a namespace transformer could meet here).
CLUSTER_KINDS = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "StorageClass"})
# Kinds whose pod template `labels: includeTemplates` reaches.
WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})
# The merge keys of the lists of objects a strategic merge may touch in built-in kinds
# (their patchMergeKey); any other list of objects is refused rather than guessed.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}


class Unsupported(ValueError):
    """A kustomization uses something this build does not implement."""


def load_documents(path: Path) -> list[Any]:
    """The YAML documents of a file, empty ones (as after a leading `---`) skipped."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _manifests(path: Path) -> list[Manifest]:
    docs = load_documents(path)
    for doc in docs:
        if not isinstance(doc, dict) or not {"apiVersion", "kind", "metadata"} <= set(doc):
            raise ValueError(f"{path}: every document must be a manifest")
    return docs


def build(directory: Path) -> list[Manifest]:
    """The manifests `kustomize build DIRECTORY` prints, for the subset implemented."""
    where = directory / KUSTOMIZATION
    spec = yaml.safe_load(where.read_text())
    unknown = sorted(set(spec) - FIELDS)
    if unknown:
        raise Unsupported(f"{where}: not implemented here: {', '.join(unknown)}")
    found: list[Manifest] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        found += build(path) if path.is_dir() else _manifests(path)
    found += _secrets(directory, spec)
    for patch in spec.get("patches", []):
        _patch(found, directory, patch)
    if "namespace" in spec:
        _namespace(found, spec["namespace"])
    for entry in spec.get("labels", []):
        _labels(found, entry)
    for entry in spec.get("images", []):
        _image(found, entry)
    ids = [(m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]) for m in found]
    twice = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    if twice:
        raise ValueError(f"{directory}: defined more than once: {twice}")
    return found


# --- generators -------------------------------------------------------------------------


def _secrets(directory: Path, spec: Manifest) -> list[Manifest]:
    generators = spec.get("secretGenerator", [])
    if generators and not spec.get("generatorOptions", {}).get("disableNameSuffixHash"):
        # A hashed name is rewritten in built-in references only; KEDA's secretTargetRef
        # would keep naming a Secret that does not exist.
        raise Unsupported("secretGenerator needs generatorOptions.disableNameSuffixHash: true")
    secrets = []
    for gen in generators:
        unknown = sorted(set(gen) - {"name", "files", "literals", "type"})
        if unknown:
            raise Unsupported(f"secretGenerator {gen.get('name')}: {', '.join(unknown)}")
        data: dict[str, bytes] = {}
        for literal in gen.get("literals", []):
            key, _, value = literal.partition("=")
            data[key] = value.encode()
        for entry in gen.get("files", []):
            key, _, source = entry.rpartition("=")
            path = directory / source
            if not path.is_file():
                raise FileNotFoundError(f"secret {gen['name']}: no file {path}")
            data[key or path.name] = path.read_bytes()
        secrets.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": gen["name"]},
                "type": gen.get("type", "Opaque"),
                "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
            }
        )
    return secrets


# --- patches ----------------------------------------------------------------------------


def _patch(manifests: list[Manifest], directory: Path, entry: Manifest) -> None:
    if set(entry) - {"path", "target"} or "path" not in entry:
        raise Unsupported(f"patch {entry}: only `path` (and `target`) are implemented")
    (body,) = load_documents(directory / entry["path"])
    target = entry.get("target") or {
        "kind": body.get("kind"),
        "name": body.get("metadata", {}).get("name"),
    }
    if set(target) - {"kind", "name"}:
        raise Unsupported(f"patch target {target}: only kind and name are implemented")
    at = [
        i
        for i, m in enumerate(manifests)
        if m["kind"] == target["kind"] and m["metadata"]["name"] == target["name"]
    ]
    if len(at) != 1:
        raise ValueError(f"patch {entry['path']}: {len(at)} targets, not 1")
    (i,) = at
    if isinstance(body, list):
        manifests[i] = json_patch(manifests[i], body)
    else:
        manifests[i] = _merge(manifests[i], body, (), _builtin(manifests[i]))


def _builtin(manifest: Manifest) -> bool:
    group = str(manifest["apiVersion"]).rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def _merge(target: Any, patch: Any, path: tuple[str, ...], builtin: bool) -> Any:
    """A strategic merge: objects key by key (`null` deletes), lists of objects by their
    merge key, anything else replaced."""
    if isinstance(target, dict) and isinstance(patch, dict):
        merged = dict(target)
        for key, value in patch.items():
            if str(key).startswith("$"):
                raise Unsupported(f"patch directive {key} is not implemented")
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = _merge(merged[key], value, (*path, key), builtin)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(target, list) and isinstance(patch, list):
        if not any(isinstance(item, dict) for item in [*target, *patch]):
            return copy.deepcopy(patch)
        key = _merge_key(path) if builtin else None
        if key is None:
            where = "/".join(path)
            raise Unsupported(f"a strategic merge of the list {where}: use a JSON patch")
        merged_list = list(target)
        for item in patch:
            at = next((n for n, t in enumerate(merged_list) if t.get(key) == item.get(key)), None)
            if at is None:
                merged_list.append(copy.deepcopy(item))
            else:
                merged_list[at] = _merge(merged_list[at], item, path, builtin)
        return merged_list
    return copy.deepcopy(patch)


def _merge_key(path: tuple[str, ...]) -> str | None:
    field = path[-1] if path else ""
    if field == "ports":
        # A container's ports merge by containerPort, a Service's by port.
        return "containerPort" if len(path) > 1 and path[-2] != "spec" else "port"
    return MERGE_KEYS.get(field)


def json_patch(document: Manifest, ops: list[Manifest]) -> Manifest:
    """RFC 6902 `add`, `remove` and `replace` (kustomize fails on a missing path too)."""
    result = copy.deepcopy(document)
    for op in ops:
        if op.get("op") not in ("add", "remove", "replace"):
            raise Unsupported(f"JSON patch op {op.get('op')!r} is not implemented")
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
        ]
        node: Any = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            index = len(node) if last == "-" else int(last)
            if op["op"] != "add" and not 0 <= index < len(node):
                raise ValueError(f"JSON patch: no {op['path']}")
            if op["op"] == "add":
                node.insert(index, copy.deepcopy(op["value"]))
            elif op["op"] == "remove":
                del node[index]
            else:
                node[index] = copy.deepcopy(op["value"])
            continue
        if op["op"] != "add" and last not in node:
            raise ValueError(f"JSON patch: no {op['path']}")
        if op["op"] == "remove":
            del node[last]
        else:
            node[last] = copy.deepcopy(op["value"])
    return result


# --- transformers -----------------------------------------------------------------------


def _namespace(manifests: list[Manifest], namespace: str) -> None:
    for manifest in manifests:
        kind = manifest["kind"]
        if kind in ("RoleBinding", "ClusterRoleBinding"):
            raise Unsupported("the namespace of RoleBinding subjects is not implemented")
        if kind == "Namespace":
            manifest["metadata"]["name"] = namespace  # kustomize renames it
        elif kind not in CLUSTER_KINDS:
            manifest["metadata"]["namespace"] = namespace


def _labels(manifests: list[Manifest], entry: Manifest) -> None:
    unknown = sorted(set(entry) - {"pairs", "includeSelectors", "includeTemplates"})
    if unknown or entry.get("includeSelectors", False):
        # A Deployment's selector cannot change once it exists: not worth doing here.
        raise Unsupported(f"labels {entry}: only pairs and includeTemplates are implemented")
    for manifest in manifests:
        manifest["metadata"].setdefault("labels", {}).update(entry["pairs"])
        if entry.get("includeTemplates") and manifest["kind"] in WORKLOADS:
            template = manifest["spec"]["template"]
            template.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])


def image_name(image: str) -> str:
    """An image reference without its tag or digest (a registry's port is kept)."""
    name = image.split("@", 1)[0]
    head, slash, tail = name.rpartition("/")
    return head + slash + tail.split(":", 1)[0]


def _image(manifests: list[Manifest], entry: Manifest) -> None:
    unknown = sorted(set(entry) - {"name", "newName", "newTag", "digest"})
    if unknown:
        raise Unsupported(f"images {entry}: {', '.join(unknown)} not implemented here")
    for manifest in manifests:
        pod = manifest.get("spec", {}).get("template", {}).get("spec", {})
        for container in [*pod.get("containers", []), *pod.get("initContainers", [])]:
            name = image_name(container["image"])
            if name != entry["name"]:
                continue
            suffix = container["image"][len(name) :]  # the tag or digest it had
            if "digest" in entry:
                suffix = f"@{entry['digest']}"
            elif "newTag" in entry:
                suffix = f":{entry['newTag']}"
            container["image"] = entry.get("newName", name) + suffix
