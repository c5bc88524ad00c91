"""Provider rate limits (requests and tokens per minute), held fleet-wide by the ledger.

Providers limit each API key per minute; a fleet that finds out by collecting 429s wastes
retries and deadlines. The ledger's reservation takes one request and the call's token
bound from the current minute window of the model's limit, in the same script that holds
its spend, and the settlement reconciles the window's tokens with what the provider
reported (a failed call gives its tokens back and keeps its request: it was sent).
Windows are calendar minutes (UTC), like the providers' own.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from fleetline.shared import keys

WINDOW_S = 60
# A worker thread sleeps at most this long for a window to open; a longer wait sends the
# step back to its queue with a countdown, so no thread is held for long.
WAIT_IN_PLACE_S = 2.0


@dataclass(frozen=True)
class RateLimit:
    """The per-minute limits of one API key (None: unlimited), shared by its models."""

    group: str
    rpm: int | None = None
    tpm: int | None = None


def minute_window(now: float) -> tuple[int, float]:
    """(the minute holding `now`, seconds until the next one opens)."""
    minute = math.floor(now / WINDOW_S)
    return minute, (minute + 1) * WINDOW_S - now


def rate_arguments(limit: RateLimit | None, now: float) -> tuple[list[str], str]:
    """The key (none without a limit) and the JSON argument of a reservation's rate check."""
    if limit is None:
        return [], ""
    minute, left_s = minute_window(now)
    spec = {
        "group": limit.group,
        "rpm": -1 if limit.rpm is None else limit.rpm,
        "tpm": -1 if limit.tpm is None else limit.tpm,
        # The window's key outlives its minute a little: late settlements still land.
        "ttl": math.ceil(left_s) + WINDOW_S,
        "reset_ms": math.ceil(left_s * 1000),
    }
    return [keys.rate_window(limit.group, minute)], json.dumps(spec)
