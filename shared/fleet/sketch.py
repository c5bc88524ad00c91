"""A compact sketch of a JSON schema, for the instruction a model is sent.

`{"label": "finance|other", "keywords": ["str"], "score": "number"}` tells a model the
shape it must answer in at a fraction of the full schema's tokens; the validation gate
still checks the answer against the full schema.
"""

from __future__ import annotations

from typing import Any

_MAX_DEPTH = 8


def schema_sketch(schema: dict[str, Any]) -> Any:
    """The sketch of a pydantic `model_json_schema()`."""
    return _sketch(schema, schema.get("$defs", {}), 0)


def _sketch(node: dict[str, Any], defs: dict[str, Any], depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return "any"
    ref = node.get("$ref")
    if isinstance(ref, str):
        return _sketch(defs.get(ref.rsplit("/", 1)[-1], {}), defs, depth + 1)
    if "const" in node:
        return node["const"]
    if "enum" in node:
        return "|".join(str(v) for v in node["enum"])
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in node.get(key, []) if o.get("type") != "null"]
        if options:
            return _sketch(options[0], defs, depth + 1)
    kind = node.get("type")
    if kind == "object" or "properties" in node:
        props = node.get("properties", {})
        if not props and isinstance(node.get("additionalProperties"), dict):
            return {"str": _sketch(node["additionalProperties"], defs, depth + 1)}
        return {name: _sketch(sub, defs, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [_sketch(node.get("items", {}), defs, depth + 1)]
    if kind == "string":
        return "str"
    if kind in ("integer", "number", "boolean"):
        return kind
    return "any"
