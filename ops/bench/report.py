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

from ops.bench.harness import AFFINITY, ROOT
from ops.bench.scenario import ratio_text

ORDER = (
    "throughput",
    "latency",
    "redis_cost",
    "fanout",
    "memory",
    "io_concurrency",
    "peer_dramatiq",
    "guards",
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


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        import psutil  # type: ignore[import-untyped, unused-ignore]

        return round(float(psutil.virtual_memory().total) / 2**30, 1)
    except Exception:  # the figures still stand without it
        return None


def environment(redis_server_version: str) -> dict[str, Any]:
    """Versions, machine and source revision the figures belong to.

    The revision is recorded only from a clean tree (untracked files count: a new module
    changes what runs); a dirty one records `git_head` None and what was changed.
    """
    dirty = _git("status", "--porcelain").splitlines()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "affinity": AFFINITY[0].as_dict() if AFFINITY else None,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "fleetline_guards": _guards(),
        "platform": platform.platform(),
        "git_head": None if dirty else _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(dirty),
        "git_changed": [line[3:] for line in dirty][:50],
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


def _throughput_rows(s: dict[str, Any]) -> list[str]:
    """The throughput scenario's other targets (CPU per step) and its guards-off side."""
    f, b, r = s["fleetline"], s["baseline"], s["ratio"]
    rows = []
    for label, key, target, met in (
        ("worker CPU / step", "worker_cpu", "worker_cpu_target", "worker_cpu_target_met"),
        ("Redis CPU / step", "redis_cpu", "redis_cpu_target", "redis_cpu_target_met"),
    ):
        if target not in s:
            continue
        rows.append(
            f"| throughput: {label} | {f.get(key + '_ms_per_step')} ms "
            f"| {b.get(key + '_ms_per_step')} ms | {ratio_text(r[key + '_per_step'])} "
            f"| {s[target]} | {_met(s[met])} |"
        )
    if "moonshot" in s:
        rows.append(f"| throughput: moonshot | | | | {s['moonshot']} | {_met(s['moonshot_met'])} |")
    off, cost = s.get("guards_off"), s.get("guards_cost")
    if off and cost:
        rows.append(
            f"| throughput, every guard off | {off['jobs_per_s']} jobs/s, "
            f"{off['worker_cpu_ms_per_step']} ms worker CPU / step | Fleetline with them on "
            f"| on/off {ratio_text(cost['jobs_per_s_on_over_off'])}; off/bare "
            f"{ratio_text(cost['unguarded_over_bare'])} | none: their cost | n/a |"
        )
    return rows


def _guards_table(s: dict[str, Any]) -> list[str]:
    """One row per guard configuration: its figures and what it adds over no guard."""
    configs = s.get("configs") or {}
    if not configs or "error" in s:
        return []
    lines = [
        "",
        "## What each guard costs",
        "",
        "Each row a fleet of its own (FLEETLINE_WORKER_GUARDS); cost = the row minus `none`, "
        "per step (a subtask or a job's callback); jobs/s against `none`, pairwise median "
        "(lowest-highest).",
        "",
        "| guards on | jobs/s | vs none | worker CPU ms / step | added | Redis CPU ms / step "
        "| added | commands / step | added | round trips / step |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = ["all", "none", *s.get("guard_order", []), "all_dark", "bare_celery"]
    for name in [n for n in order if n in configs]:
        c = configs[name]
        add = c.get("added_over_none") or {}
        vs = c.get("jobs_per_s_over_none")
        label = {
            "all": "all",
            "none": "none",
            "all_dark": "all, tracing + metrics off",
            "bare_celery": "bare Celery (reference)",
        }.get(name, f"{name} alone")
        lines.append(
            f"| {label} | {c['jobs_per_s']} | {ratio_text(vs) if vs else ''} "
            f"| {c['worker_cpu_ms_per_step']} | {_signed(add.get('worker_cpu_ms_per_step'))} "
            f"| {c['redis_cpu_ms_per_step']} | {_signed(add.get('redis_cpu_ms_per_step'))} "
            f"| {c['commands_per_step']} | {_signed(add.get('commands_per_step'))} "
            f"| {c['round_trips_per_step']} |"
        )
    return lines


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.3f}"


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    v = env["versions"]
    revision = (
        f"git {env['git_head']}"
        if env.get("git_head")
        else "uncommitted changes (no revision recorded)"
    )
    pinned = env.get("affinity")
    lines = [
        f"# Fleetline benchmark ({results['sizes']['mode']}"
        f"{', partial' if results.get('partial') else ''})",
        "",
        f"{env['date']} · {env.get('cpu_model', '')} · {env['cpu_count']} CPUs · "
        f"{env.get('memory_gib')} GiB · {env['platform']} · {revision} · Python {v['python']}"
        f" · Celery {v['celery']} · kombu {v['kombu']} · redis-py {v['redis_py']} · Redis "
        f"{v['redis_server']} · Dramatiq {v['dramatiq']} · total {results['duration_s']:.0f} s",
        "",
        "Baseline: bare Celery (same Redis, queues, pool, concurrency, flags, send-only "
        "result backend and priority) unless the row says otherwise. After a warm-up the "
        "sides alternate, their order rotating each repetition (A B C, B C A, ...), every "
        "side but the measured one paused; ratios are the median of the per-repetition "
        "ratios, (lowest-highest) beside it. "
        + (
            f"Producer on CPU {pinned['producer']}, Redis and workers on "
            f"{pinned['workers_and_redis']}. "
            if pinned
            else "Nothing pinned. "
        )
        + f"Fleetline guards on: {', '.join(env['fleetline_guards'])}. Load average at "
        f"start: {env['load_average_at_start']}; `foreign_cpu_s` in each sample is the CPU "
        "of every process outside this benchmark, plus steal.",
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
        if name == "throughput":
            lines += _throughput_rows(s)
    lines += [
        "",
        "† some samples ran while other processes took more than "
        "30 % of a core (`noisy` in the json); full runs re-run such repetitions up to "
        "twice per scenario (kept as `<side>~rejected`).",
        *_guards_table(scenarios.get("guards") or {}),
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
