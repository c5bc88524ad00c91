"""What providers billed, written ahead to disk the moment it is known.

A step charges its calls in its closing round trip. Between a provider's answer and that
trip the worker can be SIGKILLed, or Redis can be away longer than the outage grace; the
usage is then known only here. Each process appends to a file of its own and holds an
exclusive flock on it while it lives (the kernel drops the lock however the process dies):

- a file whose lock can be taken is an orphan: any worker of the host settles its entries
  and deletes it;
- an entry of a live process that its step has not settled after `STALE_S` (Redis was
  away) is settled by the process's replayer once Redis answers.

Settlement is once per call id, so settling an entry that is already charged changes
nothing. Files are named after the Redis they charge to, so fleets sharing a host (or a
folder) never settle into each other's ledgers.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from redis.exceptions import RedisError

from fleetline.shared.ledger import Ledger, parse_settle
from fleetline.shared.round_trip import RoundTrip

log = logging.getLogger(__name__)

# A step settles its calls within milliseconds of its last one; older entries are replayed.
STALE_S = 5.0
# How often a worker looks for entries to settle and orphans to adopt.
REPLAY_INTERVAL_S = 2.0
# A file past this size is started afresh with only the entries still unsettled.
ROTATE_BYTES = 4 << 20
# Entries settled per round trip when a dead worker's file is adopted.
SETTLE_CHUNK = 500


@dataclass(frozen=True)
class Usage:
    """The whole bill of one call id so far (a later line of the same call id replaces it)."""

    call_id: str
    usd: float
    tokens: int
    saved_tiering_usd: float = 0.0

    def line(self) -> bytes:
        fields = [self.call_id, self.usd, self.tokens, self.saved_tiering_usd]
        return (json.dumps(fields, separators=(",", ":")) + "\n").encode()

    @classmethod
    def parse(cls, line: str) -> Usage | None:
        try:
            call_id, usd, tokens, saved = json.loads(line)
            return cls(str(call_id), float(usd), int(tokens), float(saved))
        except (ValueError, TypeError):
            return None  # a line cut short by the crash that orphaned its file


def spool_tag(redis_where: str) -> str:
    """The name part that ties a spool file to the Redis (and database) it charges to."""
    return hashlib.sha256(redis_where.encode()).hexdigest()[:12]


class UsageSpool:
    """This process's write-ahead file of billed usage, and the replayer of every file."""

    def __init__(self, directory: str | Path, redis_where: str) -> None:
        """redis_where: the server and database the entries charge to (`host:port/db`)."""
        self.directory = Path(directory)
        self.tag = spool_tag(redis_where)
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[float, Usage]] = {}
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0

    def write(self, usage: Usage) -> None:
        """Put a call's bill on disk before anything else can fail (the page cache
        outlives the process; a host crash is not covered)."""
        line = usage.line()
        with self._lock:
            fd = self._open()
            os.write(fd, line)
            self._size += len(line)
            self._pending[usage.call_id] = (time.monotonic(), usage)

    def settled(self, call_ids: list[str]) -> None:
        """These call ids are charged in the ledger: forget them."""
        with self._lock:
            for call_id in call_ids:
                self._pending.pop(call_id, None)
            if self._fd is not None and self._size > ROTATE_BYTES:
                self._rotate()

    def pending(self) -> list[Usage]:
        with self._lock:
            return [usage for _, usage in self._pending.values()]

    def replay(self, ledger: Ledger) -> int:
        """Settle this process's stale entries and every orphan file; the entries settled."""
        cutoff = time.monotonic() - STALE_S
        with self._lock:
            stale = [u for at, u in self._pending.values() if at <= cutoff]
        count = 0
        if stale:
            self.settled(_settle(ledger, stale))
            count += len(stale)
        for path in self._orphans():
            count += _adopt(path, ledger)
        return count

    def close(self) -> None:
        """At shutdown: the file goes when nothing in it waits; else it is left to adopt."""
        with self._lock:
            if self._fd is None:
                return
            if not self._pending and self._path is not None:
                self._path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None

    def _open(self) -> int:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{self.tag}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            self._path = self.directory / f"{name}.jsonl"
            self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._size = 0
        return self._fd

    def _rotate(self) -> None:
        """A fresh file with the unsettled entries only; the old one goes (lock held)."""
        old_fd, old_path = self._fd, self._path
        self._fd = None
        fd = self._open()
        for _, usage in self._pending.values():
            line = usage.line()
            os.write(fd, line)
            self._size += len(line)
        if old_path is not None:
            old_path.unlink(missing_ok=True)
        if old_fd is not None:
            os.close(old_fd)

    def _orphans(self) -> list[Path]:
        try:
            found = sorted(self.directory.glob(f"{self.tag}.*.jsonl"))
        except OSError:
            return []
        return [path for path in found if path != self._path]


def _adopt(path: Path, ledger: Ledger) -> int:
    """Settle an orphan's entries and delete it; nothing when its writer still lives."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0  # another worker adopted it first
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        if not path.exists():
            return 0  # adopted and deleted between our open and our lock
        with os.fdopen(os.dup(fd), encoding="utf-8", errors="replace") as f:
            latest = {u.call_id: u for u in map(Usage.parse, f) if u is not None}
        if latest:
            usages = list(latest.values())
            for start in range(0, len(usages), SETTLE_CHUNK):
                _settle(ledger, usages[start : start + SETTLE_CHUNK])
            log.warning("settled %d billed calls of a dead worker (%s)", len(latest), path.name)
        path.unlink(missing_ok=True)
        return len(latest)
    finally:
        os.close(fd)


def _settle(ledger: Ledger, usages: list[Usage]) -> list[str]:
    """Settle each usage under its call id, in one round trip; the call ids now charged.

    Raises RedisError while Redis is away (the entries stay for the next pass).
    """
    trip = RoundTrip(ledger.client)
    indexes = [
        ledger.queue_settle(trip, u.call_id, u.usd, u.tokens, saved_tiering_usd=u.saved_tiering_usd)
        for u in usages
    ]
    replies = trip.execute()
    for usage, index in zip(usages, indexes, strict=True):
        settlement = parse_settle(replies[index])
        if settlement.state in ("unknown", "released"):
            log.error(
                "billed call %s ($%.9f) found its record %s: not charged",
                usage.call_id,
                usage.usd,
                settlement.state,
            )
    return [u.call_id for u in usages]


def start_replayer(spool: UsageSpool, ledger: Ledger) -> threading.Thread:
    """A daemon thread that replays the spool every REPLAY_INTERVAL_S."""

    def loop() -> None:
        while True:
            time.sleep(REPLAY_INTERVAL_S)
            try:
                spool.replay(ledger)
            except RedisError:
                pass  # Redis is away: the entries wait for the next pass
            except Exception:
                log.exception("replaying billed usage failed; retrying")

    thread = threading.Thread(target=loop, name="fleetline-usage-spool", daemon=True)
    thread.start()
    return thread
