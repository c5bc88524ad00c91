"""Numbers for the sim's schema filler: the text's figures, kept within the schema's bounds."""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from fleetline.shared.models.sim_source import Source


def number_value(
    schema: Mapping[str, Any], src: Source, integer: bool, hint: str = ""
) -> int | float:
    """A figure of the text for the field hint names, within the schema's bounds."""
    lo, lo_open = _bound(schema, "minimum", "exclusiveMinimum", max)
    hi, hi_open = _bound(schema, "maximum", "exclusiveMaximum", min)

    def fits(v: float) -> bool:
        above = lo is None or (v > lo if lo_open else v >= lo)
        below = hi is None or (v < hi if hi_open else v <= hi)
        return above and below and (not integer or v.is_integer())

    value = src.number(fits, hint)
    if value is None:
        value = _seeded(src, lo, hi, integer)
    step = schema.get("multipleOf")
    step = float(step) if step else (1.0 if integer else None)
    if step is None:
        value = _clamped(value, lo, lo_open, hi, hi_open)
    else:
        value = _snapped(value, step, lo, lo_open, hi, hi_open)
    return round(value) if integer else value


def _bound(
    schema: Mapping[str, Any], closed: str, open_: str, tighter: Any
) -> tuple[float | None, bool]:
    """The tighter of a closed and an exclusive bound, and whether it is exclusive."""
    c, o = schema.get(closed), schema.get(open_)
    o = None if isinstance(o, bool) else o  # draft-4 style boolean flags are not bounds
    if o is not None and (c is None or tighter(c, o) == o):
        return float(o), True
    return (float(c), False) if c is not None else (None, False)


def _seeded(src: Source, lo: float | None, hi: float | None, integer: bool) -> float:
    """A number for a text with no figures: seeded, within whichever bounds there are."""
    rng = src.rng
    if lo is not None and hi is not None:
        value = rng.uniform(lo, hi)
    elif lo is not None:
        value = lo + rng.randint(1, 100)
    elif hi is not None:
        value = hi - rng.randint(1, 100)
    else:
        value = float(rng.randint(0, 100))
    return float(round(value)) if integer else round(value, 3)


def _clamped(v: float, lo: float | None, lo_open: bool, hi: float | None, hi_open: bool) -> float:
    if lo is not None and (v < lo or (lo_open and v <= lo)):
        v = _inside(lo, hi, 1.0) if lo_open else lo
    if hi is not None and (v > hi or (hi_open and v >= hi)):
        v = _inside(hi, lo, -1.0) if hi_open else hi
    return v


def _inside(bound: float, other: float | None, direction: float) -> float:
    """A number just within an exclusive bound: midway to the other bound, else one past."""
    return (bound + other) / 2 if other is not None else bound + direction


def _snapped(
    v: float, step: float, lo: float | None, lo_open: bool, hi: float | None, hi_open: bool
) -> float:
    """The multiple of step nearest v that lies within the bounds (if any does)."""
    k_min = -math.inf if lo is None else math.ceil(lo / step)
    if lo is not None and lo_open and k_min * step <= lo:
        k_min += 1
    k_max = math.inf if hi is None else math.floor(hi / step)
    if hi is not None and hi_open and k_max * step >= hi:
        k_max -= 1
    k = max(k_min, min(k_max, round(v / step)))
    # Round to step's own decimals, so that 3 * 0.1 is 0.3, not 0.30000000000000004.
    exponent = Decimal(repr(step)).as_tuple().exponent
    decimals = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    return round(k * step, decimals)
