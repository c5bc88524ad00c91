"""Example strings for a regular expression, for the sim's answers to `pattern` fields.

Walks the pattern as CPython's own regex parser reads it (`re._parser`: private, but the
parser `re` itself runs on since 3.11) and writes one string it should match, taking
characters from a hint string where the pattern allows, so that the example echoes the
text. Supported: literals, `.`, classes and their negations, `\\d \\w \\s`, repeats,
groups, alternation and back-references. Look-arounds are skipped and word boundaries
ignored, so a pattern leaning on them may get an example that does not match: callers
must check the result with `re.search`.
"""

from __future__ import annotations

import importlib
import random
import string
from collections.abc import Callable
from typing import Any

# Characters tried for classes, in order of preference (after the hint's own).
_ALPHABET = string.ascii_letters + string.digits + " _-.,:;/@#"
_CATEGORIES = {
    "CATEGORY_DIGIT": string.digits,
    "CATEGORY_NOT_DIGIT": string.ascii_letters + " _-",
    "CATEGORY_WORD": string.ascii_letters + string.digits + "_",
    "CATEGORY_NOT_WORD": " -.,:;/",
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_SPACE": string.ascii_letters + string.digits,
}
# Unbounded repeats (`+`, `*`, `{2,}`) stop this many characters past their minimum.
_OPEN_REPEAT = 1 << 16


def example(pattern: str, hint: str, rng: random.Random, extra: int = 0) -> str | None:
    """One string meant to match pattern, or None when the pattern cannot be read.

    Args:
        pattern: a regular expression in Python syntax.
        hint: characters to prefer, in order, wherever the pattern accepts them.
        rng: picks among alternatives.
        extra: how many more times than its minimum each ranged repeat runs (capped by
            its maximum), for callers that need a longer example.
    """
    try:
        parser: Any = importlib.import_module("re._parser")
        tree = parser.parse(pattern)
    except Exception:  # the private parser is missing or the pattern is invalid
        return None
    writer = _Writer(hint, rng, extra)
    try:
        writer.walk(list(tree))
    except (ValueError, TypeError, IndexError):  # a construct this walker does not know
        return None
    return "".join(writer.out)


class _Writer:
    """Writes characters for a parsed pattern, drawing on the hint where it can."""

    def __init__(self, hint: str, rng: random.Random, extra: int) -> None:
        self.hint = hint
        self.pos = 0
        self.rng = rng
        self.extra = extra
        self.out: list[str] = []
        self.groups: dict[int, str] = {}

    def walk(self, items: list[Any]) -> None:
        for op, arg in items:
            self.item(str(op), arg)

    def item(self, op: str, arg: Any) -> None:
        if op == "LITERAL":
            self.out.append(chr(arg))
        elif op == "NOT_LITERAL":
            self.out.append(self.char(lambda c: c != chr(arg)))
        elif op == "ANY":
            self.out.append(self.char(lambda c: c != "\n"))
        elif op == "IN":
            self.out.append(self.char(lambda c: _in_class(c, arg)))
        elif op in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, body = arg
            high = low + _OPEN_REPEAT if str(high) == "MAXREPEAT" else high
            for _ in range(min(high, low + self.extra)):
                self.walk(list(body))
        elif op in ("SUBPATTERN", "ATOMIC_GROUP"):
            group, body = (arg[0], arg[-1]) if op == "SUBPATTERN" else (None, arg)
            start = len(self.out)
            self.walk(list(body))
            if group is not None:
                self.groups[group] = "".join(self.out[start:])
        elif op == "BRANCH":
            self.walk(list(self.rng.choice(arg[1])))
        elif op == "GROUPREF":
            self.out.append(self.groups.get(arg, ""))
        elif op == "GROUPREF_EXISTS":
            group, yes, no = arg
            self.walk(list(yes if group in self.groups else (no or [])))
        elif op not in ("AT", "ASSERT", "ASSERT_NOT"):
            raise ValueError(op)

    def char(self, accepts: Callable[[str], bool]) -> str:
        """The next hint character the pattern accepts, else the first acceptable one."""
        for offset in range(len(self.hint)):
            c = self.hint[(self.pos + offset) % len(self.hint)]
            if accepts(c):
                self.pos += offset + 1
                return c
        for c in _ALPHABET:
            if accepts(c):
                return c
        raise ValueError("no character fits")


def _in_class(c: str, items: Any) -> bool:
    """Whether c is in a parsed character class ([...], with NEGATE, ranges, categories)."""
    negate = False
    found = False
    for op, arg in items:
        name = str(op)
        if name == "NEGATE":
            negate = True
        elif name == "LITERAL":
            found = found or c == chr(arg)
        elif name == "RANGE":
            found = found or arg[0] <= ord(c) <= arg[1]
        elif name == "CATEGORY":
            found = found or c in _CATEGORIES.get(str(arg), "")
    return found != negate
