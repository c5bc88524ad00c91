"""The link to Redis cut and made lossy, and a backlog queued while the agents are down."""

from __future__ import annotations

import os
import time
from collections import Counter

import psutil  # type: ignore[import-untyped, unused-ignore]  # no types-psutil in the venv
import redis

from fleetline.shared import keys
from fleetline.shared.batched_reads import read_each, scan_names
from ops.chaos.checks import TERMINAL, Account, account
from ops.chaos.harness import RESEARCH_BRIEF_WORKERS, JobStream, Submitted, research_spec
from ops.chaos.proxy import Proxy
from ops.chaos.run import Run

# Workers must consume again within this long of the heal.
RESUME_WITHIN_S = 30.0


def partition(run: Run) -> Account:
    """The fleet (workers, beat and producer) reaches Redis through a proxy that is cut
    for a while, then made to lose packets: submits fail fast, nothing is lost."""
    proxy = Proxy(run.server.port).start()
    try:
        fleet = run.fleet("partition", via_port=proxy.port)
        timeout = fleet.settings.redis.submit_timeout_s
        stream = JobStream(fleet.producer).start(run.rate, run.fault_s * 2.5)
        time.sleep(run.fault_s / 4)
        proxy.partition()
        time.sleep(run.fault_s)
        proxy.heal()
        healed = time.time()
        time.sleep(run.fault_s / 4)
        proxy.loss = 0.2
        time.sleep(run.fault_s / 2)
        proxy.heal()
        stream.join()
        out = account(
            fleet, run.client(fleet), stream.jobs, healed_at=healed, refused=stream.refused
        )
    finally:
        proxy.close()
    hung = stream.slowest_submit_s > timeout + 2
    slow = out.recovery_s is None or out.recovery_s > RESUME_WITHIN_S
    out.passed = out.passed and not hung and not slow
    out.notes.append(
        f"slowest submit {stream.slowest_submit_s:.2f} s (timeout {timeout:g} s); "
        f"{stream.refused} submits refused during the cut; "
        f"resumed {out.recovery_s} s after the heal"
    )
    return out


def backlog(run: Run) -> Account:
    """Jobs queued while the agents' workers are down (synthesis and beat up), then
    drained: Redis memory per queued job, RSS flat, every job terminal, keys back to their
    baseline once the TTLs pass."""
    # Step results (the chords' joins) must outlive the longest job; finished jobs go in 60 s.
    ttl = {"FLEETLINE_LIMITS_FINISHED_TTL_S": "60", "FLEETLINE_CELERY_RESULT_EXPIRES_S": "1800"}
    up = run.fleet("backlog", worker_types=["synthesis"], **ttl)
    client = run.client(up)
    baseline_keys = client.dbsize()
    memory_before = int(client.info("memory")["used_memory"])
    me = psutil.Process(os.getpid())
    rss_before = me.memory_info().rss
    count = run.scaled(5_000, 2_000)
    jobs = []
    for n in range(count):
        spec = research_spec(n, deadline_s=1_200, latency_profile="batch")
        receipt = up.producer.submit(spec)
        jobs.append(Submitted(receipt.job_id, time.time(), time.time() + 1_200))
    per_job = (int(client.info("memory")["used_memory"]) - memory_before) / count
    agents = [n for n in RESEARCH_BRIEF_WORKERS if n != "synthesis"]
    # One invoice for both fleets: the sim bills wherever a call runs.
    drain = run.fleet_on(
        up.db,
        "backlog_agents",
        worker_types=agents,
        with_beat=False,
        FLEETLINE_SIM_INVOICE=str(up.invoice),
        **ttl,
    )
    rss: list[int] = []
    seen: dict[str, str] = {}
    deadline = time.monotonic() + 1_500
    while time.monotonic() < deadline and _note_statuses(client, jobs, seen) < count:
        rss.append(sum(_rss(p) for p in drain.worker_pids().values()))
        time.sleep(2)
    out = account(up, client, jobs, seen=seen)
    producer_growth = me.memory_info().rss - rss_before
    time.sleep(70)  # the finished jobs' TTL, and then some
    left = client.dbsize() - baseline_keys
    ttls = dict(read_each(client, scan_names(client, "*"), lambda pipe, name: pipe.ttl(name)))
    families = Counter(_family(name) for name in ttls)
    immortal = [name for name, ttl in ttls.items() if ttl == -1]
    # Keys left past the job TTL must all be on their way out, but for the fleet's own.
    leaked = sorted(name for name in immortal if not _kept_for_good(name))
    longest = max(ttls.values(), default=0)
    flat = not rss or max(rss[len(rss) // 2 :]) <= 1.3 * max(rss[: max(1, len(rss) // 2)]) + 50e6
    out.passed = out.passed and flat and not leaked
    out.notes.append(
        f"{count} jobs queued: {per_job:.0f} bytes of Redis memory per queued job; "
        f"worker RSS first/last {_mb(rss[0] if rss else 0)}/{_mb(rss[-1] if rss else 0)} MB; "
        f"producer grew {_mb(producer_growth)} MB; keys over baseline after the job TTL: "
        f"{left} ({dict(families.most_common(6))}), {len(immortal)} without a TTL "
        f"({len(leaked)} not the fleet's own), the longest TTL left {longest} s"
    )
    if not flat:
        out.notes.append(f"worker RSS grew while draining: max {_mb(max(rss))} MB")
    if leaked:
        out.notes.append(f"keys without a TTL that are not the fleet's own: {leaked[:10]}")
    return out


# Keys the fleet keeps without a TTL, a few a queue or a schedule entry however many jobs
# ran: kombu's queue bindings, beat's schedule, the kill-switch enforcement record, the
# fan-in queues and the deadline set (shared/keys.py says why each has none). The agents'
# bindings appear only once their workers start, after the baseline is taken, so a count
# against the baseline would call them leaks.
_KEPT_PREFIXES = ("_kombu.binding", "fl:redbeat:")
_KEPT_KEYS = frozenset({keys.kill_enforcement(), keys.fan_in_queues(), keys.deadlines()})


def _kept_for_good(name: str) -> bool:
    return name.startswith(_KEPT_PREFIXES) or name in _KEPT_KEYS


def _note_statuses(client: redis.Redis, jobs: list[Submitted], seen: dict[str, str]) -> int:
    """Read the status of every job not yet seen terminal; how many have been."""
    pending = [j for j in jobs if seen.get(j.job_id) not in TERMINAL]
    pipe = client.pipeline(transaction=False)
    for job in pending:
        pipe.hget(keys.job(job.job_id), "status")
    for job, status in zip(pending, pipe.execute(), strict=True):
        if status is not None:
            seen[job.job_id] = status.decode()
    return sum(1 for s in seen.values() if s in TERMINAL)


def _rss(pid: int) -> int:
    try:
        process = psutil.Process(pid)
        return int(process.memory_info().rss) + sum(
            int(c.memory_info().rss) for c in process.children(recursive=True)
        )
    except psutil.Error:
        return 0


def _family(text: str) -> str:
    return ":".join(part for part in text.split(":")[:3] if "{" not in part) or text[:20]


def _mb(value: float) -> str:
    return f"{value / 1e6:.0f}"
