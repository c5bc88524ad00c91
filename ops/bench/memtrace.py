"""`python -m ops.bench.memtrace <celery args>`: a Celery worker with tracemalloc on.

For chasing RSS growth the memory scenario finds: the worker runs as usual, and every
time the file `$BENCH_MEMTRACE_DIR/dump` appears it writes a tracemalloc snapshot beside
it (`snap-<n>.pickle`) and removes the trigger. Compare two snapshots with
`python -m ops.bench.memtrace --compare A B`.
"""

from __future__ import annotations

import os
import runpy
import sys
import threading
import time
import tracemalloc
from pathlib import Path


def _watch(folder: Path) -> None:
    trigger, n = folder / "dump", 0
    while True:
        if trigger.exists():
            n += 1
            tracemalloc.take_snapshot().dump(str(folder / f"snap-{n}.pickle"))
            trigger.unlink(missing_ok=True)
        time.sleep(0.2)


def compare(first: str, second: str, top: int = 25) -> None:
    before = tracemalloc.Snapshot.load(first)
    after = tracemalloc.Snapshot.load(second)
    for stat in after.compare_to(before, "traceback")[:top]:
        print(f"{stat.size_diff / 1024:+10.1f} KiB {stat.count_diff:+8d} blocks")
        for line in stat.traceback.format()[-8:]:
            print("      ", line)


def main() -> None:
    if sys.argv[1:2] == ["--compare"]:
        compare(sys.argv[2], sys.argv[3])
        return
    tracemalloc.start(12)
    folder = Path(os.environ["BENCH_MEMTRACE_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    threading.Thread(target=_watch, args=(folder,), daemon=True, name="memtrace").start()
    sys.argv = ["celery", *sys.argv[1:]]
    runpy.run_module("celery", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
