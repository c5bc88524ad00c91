"""latest.json (every raw sample, medians, ratios, versions) and latest.md (the table)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from ops.bench.harness import ROOT

ORDER = (
    "throughput",
    "latency",
    "redis_cost",
    "fanout",
    "memory",
    "io_concurrency",
    "peer_dramatiq",
)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return ""
    return out.stdout.strip()


def _guards() -> list[str]:
    try:
        from fleetline.workers.run import default_guards

        return [type(g).__name__ for g in default_guards()]
    except Exception as exc:  # the figures still stand without the list
        return [f"unknown: {exc!r}"]


def environment(redis_server_version: str) -> dict[str, Any]:
    """Versions, machine and source revision the figures belong to."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "fleetline_guards": _guards(),
        "platform": platform.platform(),
        "git_head": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "versions": {
            "python": platform.python_version(),
            "celery": _version("celery"),
            "kombu": _version("kombu"),
            "redis_py": _version("redis"),
            "redis_server": redis_server_version,
            "dramatiq": _version("dramatiq"),
            "pydantic": _version("pydantic"),
            "psutil": _version("psutil"),
        },
    }


def write(results: dict[str, Any], out_dir: Path, stem: str = "latest") -> tuple[Path, Path]:
    """Write <stem>.json and <stem>.md atomically (a crashed run leaves the old pair)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    for path, text in (
        (json_path, json.dumps(results, indent=1) + "\n"),
        (md_path, markdown(results)),
    ):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return json_path, md_path


def _met(value: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[value]


def _observability_row(name: str, s: dict[str, Any]) -> str | None:
    """The same scenario with tracing and metrics off, against it with them on."""
    off, cost = s.get("tracing_and_metrics_off"), s.get("observability_cost")
    if not off or not cost:
        return None
    if name == "throughput":
        on_off, cpu = cost["jobs_per_s_on_over_off"], cost["worker_cpu_ms_per_job_added"]
        return (
            f"| throughput, tracing + metrics off | {off['jobs_per_s']} jobs/s "
            f"| Fleetline with them on | on/off {on_off:.2f}x (+{cpu} ms worker CPU per job) "
            "| none: their cost | n/a |"
        )
    p50, p99 = off["p50_ms"], off["p99_ms"]
    return (
        f"| latency, tracing + metrics off | p50 {p50:.1f} ms, p99 {p99:.1f} ms "
        f"| Fleetline with them on | on adds p50 {cost['p50_ms_added']:+.1f} ms, "
        f"p99 {cost['p99_ms_added']:+.1f} ms | none: their cost | n/a |"
    )


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    v = env["versions"]
    lines = [
        f"# Fleetline benchmark ({results['sizes']['mode']})",
        "",
        f"{env['date']} · {env['cpu_count']} CPUs · git {env['git_head']}"
        f"{' (dirty)' if env['git_dirty'] else ''} · Python {v['python']} · Celery {v['celery']}"
        f" · kombu {v['kombu']} · redis-py {v['redis_py']} · Redis {v['redis_server']}"
        f" · Dramatiq {v['dramatiq']} · total {results['duration_s']:.0f} s",
        "",
        "Baseline: bare Celery (same Redis, queues, pool, concurrency and flags) unless the "
        "row says otherwise. Each side alternates A B A B after a warm-up; medians shown. "
        f"Fleetline guards on: {', '.join(env['fleetline_guards'])}. Load average at start: "
        f"{env['load_average_at_start']}; `foreign_cpu_s` in each sample is CPU the machine "
        "spent outside this benchmark meanwhile.",
        "",
        "| scenario | Fleetline | baseline | ratio | target | met |",
        "|---|---|---|---|---|---|",
    ]
    scenarios = results["scenarios"]
    for name in ORDER:
        s = scenarios.get(name)
        if s is None:
            continue
        if "error" in s:
            lines.append(f"| {name} | error: {s['error'][:80]} | | | | **no** |")
            continue
        h = s["headline"]
        mark = " †" if s.get("noisy_samples") else ""
        lines.append(
            f"| {name} | {h['fleetline']} | {h['baseline']} | {h['ratio']} | {s['target']} "
            f"| {_met(s['target_met'])}{mark} |"
        )
        if (row := _observability_row(name, s)) is not None:
            lines.append(row)
    lines += [
        "",
        "† some samples ran while other processes took more than "
        "30 % of a core (`noisy` in latest.json); full runs re-run such repetitions up to "
        "twice per scenario (kept as `<side>~rejected`).",
        "",
        "## Notes",
        "",
    ]
    seen: set[str] = set()
    for name in ORDER:
        s = scenarios.get(name)
        if s is None:
            continue
        for note in s.get("notes", []):
            if note not in seen:
                seen.add(note)
                lines.append(f"- **{name}**: {note}")
    lines.append("")
    return "\n".join(lines)
