"""What Redis saw: INFO counters, a MONITOR log split by database and origin, key censuses.

Redis counts the commands a Lua script runs (`redis.call`) in INFO commandstats and in
total_commands_processed, as well as the EVALSHA itself; MONITOR tags them `lua`. Round
trips are `total_reads_processed`: one read event per request (a pipeline is one).
"""

from __future__ import annotations

import collections
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis


@dataclass(frozen=True)
class Counters:
    at: float
    commands: int
    reads: int
    used_memory: int
    by_command: dict[str, int]

    def minus(self, other: Counters) -> dict[str, float]:
        return {
            "seconds": self.at - other.at,
            "commands": self.commands - other.commands,
            "reads": self.reads - other.reads,
        }


def snapshot(client: redis.Redis) -> Counters:
    """Server-wide counters, read in one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.info("stats")
    pipe.info("commandstats")
    pipe.info("memory")
    stats, cmdstats, memory = pipe.execute()
    return Counters(
        at=time.time(),
        commands=int(stats["total_commands_processed"]),
        reads=int(stats["total_reads_processed"]),
        used_memory=int(memory["used_memory"]),
        by_command={k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in cmdstats.items()},
    )


@dataclass
class Monitor:
    """A MONITOR connection read by a thread: (time, db, from_lua, command name) per line."""

    client: redis.Redis
    lines: list[tuple[float, int, bool, str]] = field(default_factory=list)
    _thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _marks: set[str] = field(default_factory=set)

    def start(self) -> None:
        ready = threading.Event()

        def read() -> None:
            with self.client.monitor() as mon:  # type: ignore[no-untyped-call]
                ready.set()
                for cmd in mon.listen():
                    name = str(cmd["command"]).split(" ", 1)
                    if name[0].upper() == "ECHO" and len(name) > 1:
                        self._marks.add(name[1].strip('"'))
                    self.lines.append(
                        (
                            float(cmd["time"]),
                            int(cmd["db"]),
                            cmd["client_type"] == "lua",
                            name[0].upper(),
                        )
                    )
                    if self._stop.is_set() and "bench-stop" in self._marks:
                        return

        self._thread = threading.Thread(target=read, name="bench-monitor", daemon=True)
        self._thread.start()
        ready.wait(5)
        time.sleep(0.1)

    def sync(self, db_client: redis.Redis, timeout_s: float = 30.0) -> None:
        """Wait until the reader has caught up with everything sent so far."""
        mark = f"bench-mark-{time.monotonic_ns()}"
        db_client.echo(mark)
        deadline = time.monotonic() + timeout_s
        while mark not in self._marks and time.monotonic() < deadline:
            time.sleep(0.01)

    def stop(self, db_client: redis.Redis) -> None:
        self._stop.set()
        db_client.echo("bench-stop")
        if self._thread is not None:
            self._thread.join(10)

    def window(self, db: int, start: float, end: float) -> dict[str, collections.Counter[str]]:
        """Commands of one database between two times, split by origin (client / lua)."""
        out: dict[str, collections.Counter[str]] = {
            "client": collections.Counter(),
            "lua": collections.Counter(),
        }
        for at, line_db, lua, name in self.lines:
            if line_db == db and start <= at < end and name != "ECHO":
                out["lua" if lua else "client"][name] += 1
        return out


_HEX = re.compile(r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NUM = re.compile(r"\d+")


def pattern(key: bytes) -> str:
    """A key with its ids and numbers blanked: keys of one kind share a pattern."""
    text = key.decode(errors="replace")
    return _NUM.sub("#", _HEX.sub("<id>", text))


def keys_of(client: redis.Redis) -> set[bytes]:
    return set(client.scan_iter(count=2000))


def census(client: redis.Redis, known: set[bytes]) -> dict[str, Any]:
    """Keys not in `known`: how many, their bytes, and which have no TTL, by pattern.

    Bytes are MEMORY USAGE with SAMPLES 0: every field counted (the default samples five
    of a hash's fields and extrapolates, which misjudges a hash of one long field)."""
    new = [k for k in keys_of(client) if k not in known]
    by_pattern: dict[str, dict[str, int]] = collections.defaultdict(
        lambda: {"keys": 0, "bytes": 0, "no_ttl": 0, "max_ttl_s": 0}
    )
    total_bytes = no_ttl = 0
    for start in range(0, len(new), 1000):
        chunk = new[start : start + 1000]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.ttl(key)
            pipe.memory_usage(key, samples=0)
        replies = pipe.execute()
        for i, key in enumerate(chunk):
            ttl, size = replies[2 * i], replies[2 * i + 1] or 0
            if ttl == -2:
                continue  # expired between SCAN and TTL
            row = by_pattern[pattern(key)]
            row["keys"] += 1
            row["bytes"] += int(size)
            total_bytes += int(size)
            if ttl == -1:
                row["no_ttl"] += 1
                no_ttl += 1
            row["max_ttl_s"] = max(row["max_ttl_s"], int(ttl))
    return {
        "keys": sum(r["keys"] for r in by_pattern.values()),
        "bytes": total_bytes,
        "no_ttl": no_ttl,
        "by_pattern": dict(sorted(by_pattern.items(), key=lambda kv: -kv[1]["keys"])),
    }


def sizes_of(client: redis.Redis, keys: set[bytes]) -> dict[bytes, tuple[int, int]]:
    """(TTL, bytes) of each of `keys` that still exists."""
    ordered = sorted(keys)
    out: dict[bytes, tuple[int, int]] = {}
    for start in range(0, len(ordered), 1000):
        chunk = ordered[start : start + 1000]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.ttl(key)
            pipe.memory_usage(key, samples=0)
        replies = pipe.execute()
        for i, key in enumerate(chunk):
            if replies[2 * i] != -2:
                out[key] = (int(replies[2 * i]), int(replies[2 * i + 1] or 0))
    return out


def growth(
    before: dict[bytes, tuple[int, int]], after: dict[bytes, tuple[int, int]]
) -> dict[str, Any]:
    """How much keys that existed before grew, by pattern (those that shrank or went: 0)."""
    by_pattern: dict[str, int] = collections.defaultdict(int)
    no_ttl: dict[str, int] = collections.defaultdict(int)
    for key, (ttl, size) in after.items():
        grew = size - before.get(key, (0, size))[1]
        if grew > 0:
            by_pattern[pattern(key)] += grew
            if ttl == -1:
                no_ttl[pattern(key)] += grew
    top = dict(sorted(by_pattern.items(), key=lambda kv: -kv[1])[:10])
    return {"bytes": sum(by_pattern.values()), "by_pattern": top, "no_ttl": dict(no_ttl)}


def family(key_pattern: str, names: frozenset[str] = frozenset()) -> str:
    """The family of a key pattern: the fleet's `names` (worker types, models) as `<name>`,
    and after the first id only the kind segments (letters, last or before an id: `trace`,
    `once`), so that `fl:{spend}:call:<id>:extract-d#:#:sim-small` is `fl:{spend}:call:<id>`."""
    segments = key_pattern.split(":")
    out: list[str] = []
    seen_id = False
    for i, segment in enumerate(segments):
        if seen_id and "<id>" not in segment:
            last = i == len(segments) - 1
            kind = segment.replace("_", "").isalpha() and segment not in names
            if not (kind and (last or "<id>" in segments[i + 1])):
                continue
        out.append("<name>" if segment in names else segment)
        seen_id = seen_id or "<id>" in segment
    return ":".join(out)


def bytes_by_family(
    new: dict[str, Any], grew: dict[str, Any], jobs: int, names: frozenset[str] = frozenset()
) -> dict[str, int]:
    """Bytes per job by key family, biggest first: of the keys a run made (a census), and
    what it added to keys that were there before (a growth)."""
    total: dict[str, int] = collections.defaultdict(int)
    for key_pattern, row in new["by_pattern"].items():
        total[family(key_pattern, names)] += int(row["bytes"])
    for key_pattern, size in grew["by_pattern"].items():
        total[family(key_pattern, names)] += int(size)
    ranked = sorted(total.items(), key=lambda kv: -kv[1])
    return {name: round(size / jobs) for name, size in ranked if size}
