"""Edge limits on JSON-shaped input: depth, size, and values that cannot round-trip.

A job spec arrives as text (a spec file, stdin) or as a Python object (`Producer.submit`,
`fleet.submit`). Before anything recursive sees it (`json.loads`, pydantic, `json.dumps`),
it is checked here without recursion, so that hostile input is refused as a `SpecError`
naming the field instead of raising `RecursionError` or `ValueError` from deep inside:

- nesting deeper than `max_depth` containers (a scalar is depth 0, `{}` and `[]` depth 1);
- text over `max_bytes` bytes of UTF-8;
- integers outside the signed 64-bit range (including those too long for `int()`);
- NaN, Infinity, -Infinity, and floats that overflow to infinity;
- in Python objects: anything but dict (with str keys), list, str, int, float, bool and
  None (so no tuples, sets, bytes or other objects), and strings with lone surrogates,
  which cannot be encoded as UTF-8 for Redis.

Field paths are dotted (`input.documents.0.text`); `spec` is the whole value; a deep path
keeps its first and last parts (`input.a.a.a.a.a...a.a`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from fleetline.shared.errors import SpecError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# The most problems one refusal lists: the first few say what is wrong.
MAX_ERRORS = 10

# A JSON string literal (the unrolled form is linear, with no backtracking).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:]', re.DOTALL)
_SURROGATE = re.compile("[\ud800-\udfff]")
# An escape that may decode to a surrogate (a false alarm only costs the walk).
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Outside strings, a number may leave int64 only with 19 digits or more, and overflow a
# float only with those or a 3-digit exponent: seen with every digit made a 0 (a
# translate and a few substring searches, much faster than a regex over digits).
_DIGITS_AS_ZERO = str.maketrans("123456789E", "000000000e")
_RISKY_SHAPES = ("0" * 19, "e000", "e+000", "e-000")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}

# A field path while walking: None (the root) or (parent path, part).
_Path = tuple[Any, str] | None
# How a long path is shortened: its first and last parts, and each part's length.
_HEAD, _TAIL, _PART_CHARS = 6, 2, 40


def check_text(text: str, max_depth: int, max_bytes: int, *, name: str = "spec") -> Any:
    """The JSON value in `text`, once it is known to be within the limits.

    The size and the nesting are checked on the raw text before `json.loads` runs (a
    bracket count outside string literals); numbers are checked as they are parsed.

    Args:
        text: the JSON text.
        max_depth: the most nested objects and arrays allowed (at least 1).
        max_bytes: the most bytes the text may take as UTF-8.
        name: what the text is called in messages ("stdin", a file name).

    Raises:
        SpecError: the text is too big or too deep, is not JSON, or holds a value that
            cannot round-trip; each problem with its field path.
    """
    _check_max_depth(max_depth)
    size = _utf8_size(text)
    if size > max_bytes:
        raise SpecError([("spec", f"{name} is {size} bytes, over the limit of {max_bytes}")])
    outside_strings = _STRING.sub("", text)
    if _too_deep(outside_strings, max_depth):
        raise SpecError([(_deep_text_path(text, max_depth), _deep_reason(max_depth))])
    hooks = _Hooks()
    # Python's own number parsing is safe (and fast) unless a number is long enough to
    # leave int64 or overflow a float; the hooks, a Python call per number, only then.
    shape = outside_strings.translate(_DIGITS_AS_ZERO)
    risky = any(pattern in shape for pattern in _RISKY_SHAPES)
    try:
        value = json.loads(
            text,
            parse_int=hooks.parse_int if risky else None,
            parse_float=hooks.parse_float if risky else None,
            parse_constant=hooks.parse_constant,
        )
    except json.JSONDecodeError as exc:
        raise SpecError(
            [("spec", f"{name} is not valid JSON: {exc.msg} (line {exc.lineno} col {exc.colno})")]
        ) from None
    except RecursionError:  # unreachable below the depth limit; never let it escape
        raise SpecError([("spec", _deep_reason(max_depth))]) from None
    # Lone surrogates come only from \uD800-\uDFFF escapes (or undecodable stdin bytes).
    if (
        hooks.refused
        or _SURROGATE_ESCAPE.search(text)
        or (not text.isascii() and _SURROGATE.search(text))
    ):
        _raise_for(value, max_depth)
    return value


def check_value(value: Any, max_depth: int) -> None:
    """Refuse a Python value that is too deep or that JSON cannot round-trip.

    An explicit-stack walk (no recursion), so a value nested 100,000 levels deep is
    refused like any other. Only the types JSON has are allowed: dict with str keys,
    list, str, int, float, bool and None (subclasses of these too).

    Raises:
        SpecError: every problem found (at most MAX_ERRORS), each with its field path.
    """
    _check_max_depth(max_depth)
    _raise_for(value, max_depth)


def problems(value: Any, max_depth: int, prefix: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """What `check_value` would refuse, as (field path, reason) pairs; [] when none.

    `prefix` is the path of `value` itself (e.g. ("input",) for a spec's input).
    """
    _check_max_depth(max_depth)
    errors: list[tuple[str, str]] = []
    # Each entry: a value, its depth as a container, and its path as a linked list of
    # (parent, part) pairs, turned into a string only when something is wrong.
    root: _Path = None
    for part in prefix:
        root = (root, part)
    stack: list[tuple[Any, int, _Path]] = [(value, 1 + len(prefix), root)]
    while stack and len(errors) < MAX_ERRORS:
        item, depth, path = stack.pop()
        if not isinstance(item, dict | list):
            reason = _scalar_problem(item)
            if reason:
                errors.append((_format(path), reason))
            continue
        if depth > max_depth:
            errors.append((_format(path), _deep_reason(max_depth)))
            continue
        children: list[tuple[Any, int, _Path]] = []
        is_dict = isinstance(item, dict)
        pairs: Iterable[tuple[Any, Any]] = (
            item.items() if isinstance(item, dict) else enumerate(item)
        )
        for key, child in pairs:
            if len(errors) >= MAX_ERRORS:
                break
            if not is_dict:  # a list's index
                part = str(key)
            elif not isinstance(key, str):
                errors.append((_format((path, repr(key))), f"key is {_kind(key)}, not a string"))
                continue
            elif key.isascii() or not _SURROGATE.search(key):
                part = key
            else:
                errors.append((_format((path, key)), "key is not valid UTF-8 (a lone surrogate)"))
                continue
            reason = _scalar_problem(child)
            if reason is None:
                children.append((child, depth + 1, (path, part)))
            elif reason:
                errors.append((_format((path, part)), reason))
        # Reversed, so that sibling containers are walked in their order.
        stack.extend(reversed(children))
    return errors[:MAX_ERRORS]


# --- the walk ---------------------------------------------------------------------------


def _raise_for(value: Any, max_depth: int) -> None:
    errors = problems(value, max_depth)
    if errors:
        raise SpecError(errors)


def _scalar_problem(value: Any) -> str | None:
    """Why a value cannot round-trip; "" when it is fine; None for a dict or list."""
    # Exact types first: they are nearly all of a spec.
    kind = type(value)
    if kind is str:
        return _string_problem(value)
    if kind is bool or value is None:
        return ""
    if kind is int:
        return _int_problem(value)
    if kind is float:
        return _float_problem(value)
    if kind is dict or kind is list:
        return None
    if isinstance(value, _Refused):
        return value.reason
    if isinstance(value, dict | list):
        return None
    if isinstance(value, str):
        return _string_problem(value)
    if isinstance(value, int):  # bool is an int
        return "" if isinstance(value, bool) else _int_problem(value)
    if isinstance(value, float):
        return _float_problem(value)
    return f"{_kind(value)} is not a JSON value (use dict, list, str, int, float, bool or None)"


def _string_problem(value: str) -> str:
    if value.isascii() or not _SURROGATE.search(value):
        return ""
    return "not valid UTF-8 (a lone surrogate)"


def _int_problem(value: int) -> str:
    if INT64_MIN <= value <= INT64_MAX:
        return ""
    # No str(): an int of more than 4300 digits cannot be converted.
    return f"a {value.bit_length()}-bit integer, outside the signed 64-bit range"


def _float_problem(value: float) -> str:
    return "" if math.isfinite(value) else f"{value!r} is not a JSON number (must be finite)"


def _kind(value: object) -> str:
    name = type(value).__name__
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


# --- text -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Refused:
    """A number `json.loads` met that cannot round-trip; the walk names its field."""

    reason: str


class _Hooks:
    """`json.loads` number hooks that refuse, rather than raise, so the field is named."""

    def __init__(self) -> None:
        self.refused = False

    def _refuse(self, reason: str) -> _Refused:
        self.refused = True
        return _Refused(reason)

    def parse_int(self, literal: str) -> int | _Refused:
        digits = len(literal) - literal.startswith("-")
        if digits > 19:  # never int(): over 4300 digits it raises ValueError
            return self._refuse(f"an integer of {digits} digits, outside the signed 64-bit range")
        value = int(literal)
        if not INT64_MIN <= value <= INT64_MAX:
            return self._refuse(f"{literal} is outside the signed 64-bit range")
        return value

    def parse_float(self, literal: str) -> float | _Refused:
        value = float(literal)
        if math.isfinite(value):
            return value
        shown = literal if len(literal) <= 40 else f"{literal[:37]}..."
        return self._refuse(f"{shown} overflows to infinity")

    def parse_constant(self, literal: str) -> _Refused:
        return self._refuse(f"{literal} is not a JSON number (must be finite)")


def _utf8_size(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _too_deep(outside_strings: str, max_depth: int) -> bool:
    """Whether the brackets in JSON text with its string literals removed nest deeper
    than `max_depth`.

    All in C (regex, map, accumulate, max), with no recursion whatever the input.
    """
    brackets = _NOT_BRACKET.sub("", outside_strings)
    if len(brackets) <= max_depth:
        return False
    return max(accumulate(map(_STEP.__getitem__, brackets))) > max_depth


def _deep_text_path(text: str, max_depth: int) -> str:
    """The path of the first container in `text` that is nested too deep.

    A token scan that keeps, for each open container, its current key or index; it runs
    only for text already known to be too deep, and stops at the culprit.
    """
    # Each frame: [is an object, current key or index, expecting a key next].
    frames: list[list[Any]] = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        first = token[0]
        if first in "[{":
            if len(frames) >= max_depth:
                path: _Path = None
                for frame in frames:
                    path = (path, str(frame[1]))
                return _format(path)
            frames.append([first == "{", "?" if first == "{" else 0, first == "{"])
        elif first in "]}":
            if frames:
                frames.pop()
        elif not frames:
            continue
        elif first == ",":
            top = frames[-1]
            if top[0]:
                top[2] = True
            else:
                top[1] += 1
        elif first == ":":
            frames[-1][2] = False
        elif frames[-1][0] and frames[-1][2]:
            frames[-1][1] = _key(token)
    return "spec"


def _key(token: str) -> str:
    try:
        key = json.loads(token)
    except ValueError:
        return token[1:-1]
    return key if isinstance(key, str) else token[1:-1]


# --- messages ---------------------------------------------------------------------------


def _deep_reason(max_depth: int) -> str:
    return f"nested deeper than {max_depth} levels (FLEETLINE_LIMITS_MAX_JSON_DEPTH)"


def _format(path: _Path) -> str:
    """A dotted path, its first and last parts kept when it is long; `spec` for the root."""
    parts: list[str] = []
    while path is not None:
        path, part = path
        if len(part) > _PART_CHARS:
            part = f"{part[: _PART_CHARS - 3]}..."
        if not part.isascii():  # a lone surrogate could not even be printed
            part = part.encode("utf-8", "backslashreplace").decode("utf-8")
        parts.append(part)
    parts.reverse()
    if not parts:
        return "spec"
    if len(parts) > _HEAD + _TAIL + 1:
        return ".".join(parts[:_HEAD]) + "..." + ".".join(parts[-_TAIL:])
    return ".".join(parts)


def _check_max_depth(max_depth: int) -> None:
    if max_depth < 1:
        raise ValueError(f"max_depth must be at least 1, not {max_depth}")
