"""Reading many keys in a few round trips, for operator commands that walk the keyspace.

One pipeline per key is a round trip per key (40,000 calls of an invoice: 40,000 trips);
one pipeline for every key holds every reply in memory at once and makes the command wait
for Redis to answer them all. A batch of READ_BATCH keys a trip keeps both small.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
from redis.client import Pipeline

# Keys read a round trip: a few hundred replies of a few hundred bytes each, so a trip
# stays well under a millisecond of Redis' time and the command's memory stays flat.
READ_BATCH = 500
# SCAN's COUNT: how many slots Redis walks a call; larger walks the keyspace in fewer trips.
SCAN_COUNT = 1_000


def read_each(
    client: redis.Redis,
    names: Iterable[str],
    read: Callable[[Pipeline, str], object],
    batch: int = READ_BATCH,
) -> Iterator[tuple[str, Any]]:
    """Each name with the reply of what `read` queues for it, `batch` names a round trip."""
    pending = iter(names)
    while chunk := list(itertools.islice(pending, batch)):
        pipe = client.pipeline(transaction=False)
        for name in chunk:
            read(pipe, name)
        yield from zip(chunk, pipe.execute(), strict=True)


def scan_names(client: redis.Redis, match: str, type_: str | None = None) -> Iterator[str]:
    """The names of the keys matching `match` (and of type `type_`), one SCAN walk."""
    for key in client.scan_iter(match=match, count=SCAN_COUNT, _type=type_):
        yield key.decode() if isinstance(key, bytes) else str(key)
