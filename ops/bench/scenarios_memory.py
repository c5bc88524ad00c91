"""Memory scenario on the no-op stack: Redis bytes per job by key family, keys that outlive
the TTL settings, and RSS, for Fleetline and bare Celery."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]  # no types-psutil in the venv

from fleetline.shared import keys
from fleetline.shared.settings import FleetlineSettings
from ops.bench.context import Context
from ops.bench.harness import tree_rss_mb
from ops.bench.jobs import run_burst, shape_of
from ops.bench.redis_probe import bytes_by_family, census, family, growth, keys_of, sizes_of
from ops.bench.scenario import result
from ops.bench.stats import quartile_medians, ratio

log = logging.getLogger("ops.bench")

# The memory jobs' deadline: far past any wait of theirs (at most memory_window unfinished
# at once), short enough that the ledger's job counters, kept to it, go within minutes.
MEMORY_DEADLINE_S = 120.0
# The target: Redis bytes per finished job, the trace store's left out.
BYTES_TARGET_RATIO = 2.0


def ttl_bound_s(settings: FleetlineSettings, deadline_s: float) -> int:
    """The longest any Fleetline key of a finished job may live, from the settings: the
    finished-job TTL; a job's spend counter (to its deadline, then that TTL and a margin);
    a closing trip's once-markers (the outage grace and a margin)."""
    finished = settings.limits.finished_ttl_s
    return max(
        finished,
        int(deadline_s) + finished + keys.SPEND_JOB_MARGIN_S,
        keys.closing_once_ttl_s(settings.redis.outage_grace_s),
    )


def _trace_bytes(by_family: dict[str, int]) -> int:
    return sum(size for name, size in by_family.items() if name.endswith(":trace"))


def _names(ctx: Context) -> frozenset[str]:
    """The fleet's worker types and models: key segments that name one of many alike."""
    stack = ctx.noop()
    assert stack.fleetline.settings is not None
    shape = stack.shape
    return frozenset({*shape.queues, shape.then, *stack.fleetline.settings.models})


def _labels(side: Any) -> list[str]:
    if hasattr(side, "fleet"):
        return list(side.fleet.processes)
    return [f"worker{i}" for i in range(len(side.procs))]


def _memory_side(ctx: Context, side: Any, jobs: int) -> dict[str, Any]:
    stack, bench, sizes = ctx.noop(), ctx.bench, ctx.sizes
    assert stack.fleetline.settings is not None
    deadline = {"deadline_s": MEMORY_DEADLINE_S}
    small = dataclasses.replace(shape_of(stack.fleetline.settings, sizes.memory_docs), **deadline)
    standard = dataclasses.replace(stack.shape, **deadline)
    client = bench.client(side.db)
    run_burst(side, standard, 10)
    run_burst(side, small, 10)
    known = keys_of(client)
    start_sizes = sizes_of(client, known)
    # Bytes per job of the standard job, read before any of its TTLs can pass: the keys it
    # made, and what it added to keys that were there before (shared counters, indexes).
    run_burst(side, standard, sizes.memory_bytes_jobs)
    bytes_census = census(client, known)
    grew = growth(start_sizes, sizes_of(client, known))
    n = sizes.memory_bytes_jobs
    by_family = bytes_by_family(bytes_census, grew, n, _names(ctx))
    per_job = round((bytes_census["bytes"] + grew["bytes"]) / n)
    out: dict[str, Any] = {
        "jobs": jobs,
        "rss_run_subtasks_per_job": small.subtasks,
        "bytes_per_job": per_job,
        "bytes_per_job_trace_store": _trace_bytes(by_family),
        "bytes_per_job_without_trace_store": per_job - _trace_bytes(by_family),
        "bytes_per_job_new_keys": round(bytes_census["bytes"] / n),
        "bytes_per_job_existing_keys_growth": round(grew["bytes"] / n),
        "keys_per_job": round(bytes_census["keys"] / n, 2),
        "bytes_per_job_by_family": by_family,
        "bytes_run": {"jobs": n, "census": bytes_census, "existing_keys_growth": grew},
    }
    me = psutil.Process()
    pids = dict(zip(_labels(side), [p.pid for p in side.procs], strict=False))
    series: dict[str, list[float]] = {"producer": [], **{k: [] for k in pids}}
    last = [0.0]

    def tick() -> None:
        if time.monotonic() - last[0] < 0.5:
            return
        last[0] = time.monotonic()
        series["producer"].append(me.memory_info().rss / 2**20)
        for label, pid in pids.items():
            series[label].append(round(sum(tree_rss_mb([pid]).values()), 2))

    r = run_burst(side, small, jobs, window=sizes.memory_window, tick=tick)
    out["wall_s"] = round(r.wall_s, 2)
    out["finished_at"] = r.finished
    out["census_after_run"] = census(client, known)
    # Keys that existed before the runs (queues, indexes, shared counters) must not grow
    # with every job; `no_ttl` growth would never go.
    out["existing_keys_growth_after_run"] = growth(start_sizes, sizes_of(client, known))
    rss: dict[str, Any] = {}
    for label, values in series.items():
        first, last_q = quartile_medians(values)
        rss[label] = {
            "first_quartile_mb": round(first, 1),
            "last_quartile_mb": round(last_q, 1),
            "growth_pct": round((last_q - first) / first * 100, 2) if first else None,
            "samples_mb": [round(v, 1) for v in values],
        }
    out["rss"] = rss
    out["known_keys"] = known
    return out


def _per_job(row: dict[str, Any]) -> bool:
    """A pattern the jobs make more than one key of. A pattern of one key is a singleton
    of the fleet (a breaker's state or window per worker type and model, the holds): its
    number does not grow with the jobs, so it is baseline, not a leak."""
    return int(row["keys"]) > 1


def _per_job_without_ttl(found: dict[str, Any]) -> int:
    """Keys without a TTL in families of more than one key (a singleton is not a leak)."""
    return sum(r["no_ttl"] for r in found["by_pattern"].values() if _per_job(r))


def _longest(rows: dict[str, Any], names: frozenset[str]) -> str:
    """Each family of `rows` with the longest TTL one of its keys had left."""
    ttl: dict[str, int] = {}
    for key_pattern, row in rows.items():
        name = family(key_pattern, names)
        ttl[name] = max(ttl.get(name, 0), int(row["max_ttl_s"]))
    return ", ".join(f"{name} {ttl[name]} s" for name in sorted(ttl))


def _top(by_family: dict[str, int], count: int = 3) -> str:
    return ", ".join(f"{name} {size} B" for name, size in list(by_family.items())[:count])


def _left(side: dict[str, Any]) -> str:
    if side["keys_left"] is None:
        return f"{side['keys_left_without_ttl']} per-job keys without TTL"
    return (
        f"{side['keys_left']} keys left after TTL "
        f"({side['keys_left_without_ttl']} per-job keys without TTL)"
    )


def memory(ctx: Context) -> dict[str, Any]:
    stack, sizes = ctx.noop(), ctx.sizes
    f = _memory_side(ctx, stack.fleetline, sizes.memory_jobs)
    b = _memory_side(ctx, stack.bare, sizes.memory_baseline_jobs)
    assert stack.fleetline.settings is not None
    bound = ttl_bound_s(stack.fleetline.settings, MEMORY_DEADLINE_S)
    why_bound = (
        f"{bound} s: finished-job TTL {sizes.ttl_s} s; spend counters to the deadline "
        f"({MEMORY_DEADLINE_S:g} s) plus that TTL and a margin; once-markers the outage "
        "grace and a margin"
    )
    notes = [
        f"Fleetline and bare Celery run with finished-job TTL and result_expires of "
        f"{sizes.ttl_s} s. Bytes per job = MEMORY USAGE of the keys a run of "
        f"{sizes.memory_bytes_jobs} standard jobs created, read right after it (before any "
        "TTL passed). RSS sampled every 0.5 s over a run of "
        f"{sizes.memory_jobs} jobs of {sizes.memory_docs} document(s) (bare: "
        f"{sizes.memory_baseline_jobs}) with at most {sizes.memory_window} unfinished at "
        "once; flat = last-quartile median within 10 % of the first-quartile median for "
        "the producer and every worker. Bytes per job include what the jobs added to keys "
        "that existed before (shared counters such as the spend window hashes). The "
        "target compares bytes without the trace store (every job's trace, kept in Redis "
        "by default: `bytes_per_job_trace_store`, shown beside).",
        "`bytes_per_job_by_family`: the same bytes by key family, biggest first (ids, "
        "numbers, and the fleet's worker type and model names blanked; what follows a "
        "key's first id kept only where it names a kind, as `:trace` or `:once`).",
        "Keys outliving the TTL count per-job patterns only: a pattern of one key (a "
        "breaker's state or window per worker type and model) is a fleet singleton, "
        "listed under `singletons_outliving_ttl`.",
    ]
    for side in (f, b):
        side["no_ttl_after_run"] = side["census_after_run"]["no_ttl"]
    if sizes.memory_wait_ttl:
        wake = max(f["finished_at"], b["finished_at"]) + bound + 5
        log.info(" waiting %.0f s for TTLs to pass", max(0.0, wake - time.time()))
        time.sleep(max(0.0, wake - time.time()))
        for side, runner in ((f, stack.fleetline), (b, stack.bare)):
            after = census(ctx.bench.client(runner.db), side["known_keys"])
            side["census_after_ttl"] = after
            side["keys_left"] = after["keys"]
            side["keys_left_without_ttl"] = _per_job_without_ttl(after)
        notes.append(
            "Keys left = keys the runs created still there once the longest TTL the "
            f"settings give a finished job's keys ({why_bound}) passed; "
            "`census_after_ttl.by_pattern` shows which, with their remaining TTL."
        )
    else:
        for side in (f, b):
            side["keys_left"] = None
            side["keys_left_without_ttl"] = _per_job_without_ttl(side["census_after_run"])
        notes.append(
            "Quick mode does not wait out the TTLs: it checks the keys the run created for "
            "no TTL (TTL -1: never go; a family of one key, a singleton, is not counted) and "
            f"for Fleetline keys whose TTL is longer than the settings give ({why_bound})."
        )
    for side in (f, b):
        side.pop("known_keys")
    leaked = f["keys_left_without_ttl"]
    # Fleetline's own keys that outlive the configured TTLs (the baseline has none).
    final = f.get("census_after_ttl") or f["census_after_run"]
    limit = 0 if sizes.memory_wait_ttl else bound + 5
    outliving = {
        pattern: row
        for pattern, row in final["by_pattern"].items()
        if pattern.startswith("fl:") and row["max_ttl_s"] > limit and _per_job(row)
    }
    f["fleetline_keys_outliving_ttl"] = outliving
    f["singletons_outliving_ttl"] = {
        pattern: row
        for pattern, row in final["by_pattern"].items()
        if pattern.startswith("fl:") and row["max_ttl_s"] > limit and not _per_job(row)
    }
    persistent_growth = f["existing_keys_growth_after_run"]["no_ttl"]
    shared_top = next(iter(f["bytes_run"]["existing_keys_growth"]["by_pattern"]), "none")
    flat = all((v["growth_pct"] or 0) <= 10 for v in f["rss"].values() if v["first_quartile_mb"])
    worst = max(f["rss"].items(), key=lambda kv: kv[1]["growth_pct"] or 0)
    names = _names(ctx)
    lean = ratio(f["bytes_per_job_without_trace_store"], b["bytes_per_job"])
    small_enough = lean <= BYTES_TARGET_RATIO
    return result(
        fleetline=f,
        baseline=b,
        ratio={
            "bytes_per_job": ratio(f["bytes_per_job"], b["bytes_per_job"]),
            "bytes_per_job_without_trace_store": lean,
        },
        target=f"Redis bytes per finished job (trace store left out) <= "
        f"{BYTES_TARGET_RATIO:g}x bare; keys back to baseline once TTLs pass (none without "
        "TTL, no Fleetline key outliving what the settings give it); RSS flat",
        target_met=small_enough
        and leaked == 0
        and not persistent_growth
        and not outliving
        and flat,
        headline={
            "fleetline": f"{f['bytes_per_job_without_trace_store']} B/job without the trace "
            f"store (+{f['bytes_per_job_trace_store']} B its traces; most "
            f"{_top(f['bytes_per_job_by_family'])}; "
            f"{f['bytes_per_job_existing_keys_growth']} into existing keys, most {shared_top}), "
            f"{_left(f)}, "
            f"{sum(r['keys'] for r in outliving.values())} fl: keys outlive the TTL "
            f"({_longest(outliving, names) or 'none'}), "
            f"RSS worst {worst[0]} "
            f"{worst[1]['growth_pct']:+.1f} %",
            "baseline": f"{b['bytes_per_job']} B/job (most {_top(b['bytes_per_job_by_family'])}), "
            f"{_left(b)}",
            "ratio": f"{lean:.2f}x bytes ({f['bytes_per_job'] / b['bytes_per_job']:.2f}x with "
            "the traces)",
        },
        notes=notes,
        target_detail={
            "bytes_ratio_without_trace_store": lean,
            "ttl_bound_s": bound,
            "keys_without_ttl": leaked,
            "fleetline_keys_outliving_ttl": sum(r["keys"] for r in outliving.values()),
            "growth_of_keys_without_ttl": persistent_growth,
            "rss_flat": flat,
        },
    )
