"""Fill any JSON schema with a value read from a text: the sim's answer for custom agents.

`fill(Model.model_json_schema(), text, seed)` builds a JSON-compatible value that
`Model.model_validate` accepts, from the text alone: strings from its sentences, names,
words and figures (the field name picks which), numbers from its figures, enum values by
the text's words, and everything else from a generator seeded by (seed, text), so the same
call gives the same value in every process.

Supported: objects (required and optional properties), `additionalProperties` /
`patternProperties` / `propertyNames` dicts, arrays (`items`, `prefixItems`, min/maxItems,
uniqueItems), `$ref` / `$defs` (recursive models stop one level down), `allOf`, `anyOf`,
`oneOf` (Optional[X] gives X; discriminated unions pick one member), `const` and `enum`,
integer and number bounds (minimum, maximum, exclusive ones, multipleOf), string
min/maxLength, `pattern` (see sim_strings and sim_pattern), the formats date, date-time,
time, duration, email, uri, uuid, ipv4/ipv6 (and networks, interfaces), hostname, path,
regex, and JSON-in-a-string (pydantic's Json[X]).

Known limits: only what the schema says can be honoured, so custom validators, Decimal
max_digits/decimal_places and int-keyed dicts (their keys are unconstrained strings in the
schema) may reject the value; a pattern using look-arounds or word boundaries may not be
met; unique arrays and dicts whose minimum outruns the text's distinct values may come up
short; `not`, `if`/`then` and `dependentRequired` are ignored.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from fleetline.shared.models.sim_numbers import number_value
from fleetline.shared.models.sim_source import KEYWORDS, NAMES, SENTENCES, Source
from fleetline.shared.models.sim_strings import FALLBACK, hint_kind, string_value
from fleetline.shared.models.sim_text import STOPWORDS, words

# How many items an array or dict gets when the schema leaves it open.
_DEFAULT_ITEMS = 3
# $ref nesting beyond which a (pathologically recursive) schema gets null.
_MAX_REFS = 32


def fill(schema: Mapping[str, Any], text: str, seed: int = 0) -> Any:
    """A JSON-compatible value valid for schema, built deterministically from text and seed.

    Args:
        schema: a JSON schema, as pydantic's `model_json_schema()` (validation mode) gives.
        text: what the answer is read from (instruction and document); a JSON document
            is read as the prose of its strings. Empty text still gives a valid value.
        seed: varies the choices the text does not decide (booleans, dates, union members).
    """
    return _Filler(schema, Source.read(text, seed)).value(schema, "", shallow=False)


class _Filler:
    """One fill: the root schema (for $ref), the text's pools and the $refs being expanded.

    `shallow` marks a subtree below a recursive $ref: there only required properties and
    minItems items are made, so recursion ends.
    """

    def __init__(self, root: Mapping[str, Any], src: Source) -> None:
        self.root = root
        self.src = src
        self.refs: list[str] = []

    def value(self, schema: Any, hint: str, shallow: bool) -> Any:
        """A value for schema; hint is the field's name, which guides what strings say."""
        if not isinstance(schema, Mapping):
            # Boolean schemas: true accepts anything, false nothing (null is as good as any).
            return (self.src.take(*_pools(hint)) or FALLBACK) if schema is True else None
        if "$ref" in schema:
            return self._ref(schema, hint, shallow)
        if "const" in schema:
            return copy.deepcopy(schema["const"])
        if "enum" in schema:
            return self._choose(list(schema["enum"]))
        if "allOf" in schema:
            return self.value(self._merged(schema), hint, shallow)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                rest = {k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}
                return self.value({**rest, **self._option(schema[key], shallow)}, hint, shallow)
        kind = _type(schema)
        if kind is None and "default" in schema:
            # An untyped field (Any) with a default: its default is certainly valid.
            return copy.deepcopy(schema["default"])
        if kind == "object":
            return self._object(schema, hint, shallow)
        if kind == "array":
            return self._array(schema, hint, shallow)
        if kind in ("integer", "number"):
            return number_value(schema, self.src, integer=kind == "integer", hint=hint)
        if kind == "boolean":
            return self.src.rng.random() < 0.5
        if kind == "null":
            return None
        return string_value(schema, self.src, hint, lambda s, h: self.value(s, h, shallow))

    def _ref(self, schema: Mapping[str, Any], hint: str, shallow: bool) -> Any:
        ref = str(schema["$ref"])
        if len(self.refs) >= _MAX_REFS:
            return None
        target = self._resolve(ref)
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        recursive = ref in self.refs
        self.refs.append(ref)
        try:
            return self.value(merged, hint, shallow or recursive)
        finally:
            self.refs.pop()

    def _resolve(self, ref: str) -> Mapping[str, Any]:
        """The schema a local JSON pointer ("#/$defs/Name") names; {} (anything) if none."""
        node: Any = self.root
        for part in ref.removeprefix("#").strip("/").split("/") if ref != "#" else []:
            key = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or key not in node:
                return {}
            node = node[key]
        return node if isinstance(node, Mapping) else {}

    def _merged(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        """allOf folded into one schema: properties and required joined, first word wins."""
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for raw in schema["allOf"]:
            if not isinstance(raw, Mapping):
                continue
            part = dict(raw)
            if "$ref" in part:
                part = {**self._resolve(str(part.pop("$ref"))), **part}
            for key, sub in part.items():
                if key == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **sub}
                elif key == "required":
                    merged["required"] = [*merged.get("required", []), *sub]
                else:
                    merged.setdefault(key, sub)
        return merged

    def _option(self, options: list[Any], shallow: bool) -> Mapping[str, Any]:
        """The member of a union to fill: not null (Optional[X] is X), unless recursing."""
        members = [o for o in options if isinstance(o, Mapping)]
        real = [o for o in members if o.get("type") != "null"]
        if not real or (shallow and len(real) < len(members)):
            return {"type": "null"}
        if shallow:
            # Below a recursive $ref, prefer members that do not recurse again.
            real = [o for o in real if "$ref" not in o] or real
        return real[0] if len(real) == 1 else self.src.rng.choice(real)

    def _choose(self, values: list[Any]) -> Any:
        """The allowed value the text speaks of most (by its words), else a seeded one."""
        if not values:
            return None
        scores = [self._score(v) for v in values]
        best = max(scores)
        pick = values[scores.index(best)] if best > 0 else self.src.rng.choice(values)
        return copy.deepcopy(pick)

    def _score(self, value: Any) -> int:
        if not isinstance(value, str):
            return 0
        vocab = set(words(value.replace("_", " ")))
        return sum(self.src.counts[w] for w in vocab if w not in STOPWORDS)

    def _object(self, schema: Mapping[str, Any], hint: str, shallow: bool) -> dict[str, Any]:
        props: Mapping[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        out = {
            key: self.value(sub, key, shallow)
            for key, sub in props.items()
            if key in required or not shallow
        }
        entries = _entry_schemas(schema)
        low = int(schema.get("minProperties", 0))
        if entries is not None and (not props or len(out) < low):
            key_schema, value_schema = entries
            target = _count(low, schema.get("maxProperties"), shallow) if not props else low
            while len(out) < target:
                key = self._key(key_schema, hint, out, low)
                if key is None:
                    break
                out[key] = self.value(value_schema, hint, shallow)
        return out

    def _key(
        self, key_schema: Mapping[str, Any], hint: str, taken: Mapping[str, Any], low: int
    ) -> str | None:
        """A new dict key, or None once the text has no new one and the minimum is met."""
        if "enum" in key_schema:
            left = [v for v in key_schema["enum"] if str(v) not in taken]
            return str(self._choose(left)) if left else None
        if key_schema:
            key = str(self.value(key_schema, hint, shallow=False))
        else:
            pools = (NAMES, KEYWORDS) if hint_kind(hint) == "name" else (KEYWORDS, NAMES)
            key = self.src.take(*pools) or "key"
        if key not in taken:
            return key
        if len(taken) >= low:
            return None
        # Below the minimum: number the repeat, so the dict still grows.
        return f"{key}_{len(taken) + 1}"

    def _array(self, schema: Mapping[str, Any], hint: str, shallow: bool) -> list[Any]:
        prefix = schema.get("prefixItems") or []
        items = schema.get("items", {})
        out = [self.value(sub, hint, shallow) for sub in prefix]
        low = int(schema.get("minItems", 0))
        target = max(len(prefix), _count(low, schema.get("maxItems"), shallow))
        if items is False or (prefix and "items" not in schema):
            return out
        seen = {_key_of(item) for item in out}
        for _ in range(4 * target + 8):
            if len(out) >= target:
                break
            item = self.value(items, hint, shallow)
            if _key_of(item) in seen:
                if len(out) >= low:
                    break  # the text has no more distinct things to say
                if schema.get("uniqueItems") and isinstance(item, str):
                    item = f"{item} ({len(out) + 1})"
                elif schema.get("uniqueItems"):
                    continue
            seen.add(_key_of(item))
            out.append(item)
        return out


def _pools(hint: str) -> tuple[str, ...]:
    return (NAMES, KEYWORDS) if hint_kind(hint) == "name" else (SENTENCES, NAMES)


def _type(schema: Mapping[str, Any]) -> str | None:
    """The schema's type: the first non-null of a list, else implied by its keywords."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    if {"properties", "additionalProperties", "patternProperties"} & schema.keys():
        return "object"
    if {"items", "prefixItems"} & schema.keys():
        return "array"
    return None


def _entry_schemas(schema: Mapping[str, Any]) -> tuple[Mapping[str, Any], Any] | None:
    """(key schema, value schema) of a dict-like object, or None if it takes no extra keys."""
    names: Mapping[str, Any] = schema.get("propertyNames") or {}
    patterns: Mapping[str, Any] = schema.get("patternProperties") or {}
    if patterns:
        pattern, value = next(iter(patterns.items()))
        return {**names, "type": "string", "pattern": pattern}, value
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping) or extra is True:
        return names, extra
    return None


def _count(low: int, high: Any, shallow: bool) -> int:
    """How many items to make: the minimum when recursing, else a few, within bounds."""
    count = low if shallow else max(low, _DEFAULT_ITEMS)
    return min(count, int(high)) if high is not None else count


def _key_of(item: Any) -> str:
    return json.dumps(item, sort_keys=True, default=str)
