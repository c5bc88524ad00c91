"""Scheduled runs: jobs from a folder or a JSONL file, submitted on a cron schedule.

A run is defined in FLEETLINE_SCHEDULE_RUNS. Source `folder`: one job over every *.txt and
*.md file of a folder (one document each, id = the file's stem). Source `jsonl`: one
JobSpec per line (the run's tenant, budget and profile fill what a line leaves out; a
line's own idempotency key is replaced). Every job of a run carries the idempotency key
`schedule:<name>:<run id>:<n>`, where the run id is the cron slot the run belongs to, so a
second trigger of the same slot submits nothing twice. A run records its progress in a
Redis hash, waits for its jobs by polling the state store, and appends a summary to the
schedule's audit stream.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from fleetline.shared import keys
from fleetline.shared.errors import ConfigError, JobNotFound, KillSwitchTripped, SpecError
from fleetline.shared.scheduled import ScheduledRun, cron_schedule, get_run
from fleetline.shared.schemas import JobStatus

if TYPE_CHECKING:
    from fleetline.producer.submit import Producer
    from fleetline.shared.settings import FleetlineSettings
    from fleetline.shared.state import StateStore

_DOC_ID_BAD = re.compile(r"[^A-Za-z0-9_.-]+")
# Beat fires at or after a slot; a clock a little behind the beat's still finds that slot.
SLOT_EARLY_S = 5.0
# Without a run's own wait_s, a run waits this long past its jobs' latest deadline (the
# watchdog finalises every job by its deadline; this covers a slow watchdog).
WAIT_GRACE_S = 30.0
POLL_S = 0.5
Progress = Callable[[int, int], None]


def cron_slot(expr: str, now: float) -> datetime:
    """The latest time the cron expression fires at or before `now` (+ SLOT_EARLY_S)."""
    c = cron_schedule(expr)
    at = datetime.fromtimestamp(now + SLOT_EARLY_S, UTC).replace(second=0, microsecond=0)
    # Celery ANDs day of month and day of week; 8 years covers any 29 February.
    for back in range(366 * 8):
        day: date = at.date() - timedelta(days=back)
        weekday = (day.weekday() + 1) % 7  # cron: Sunday is 0
        if day.month not in c.month_of_year or day.day not in c.day_of_month:
            continue
        if weekday not in c.day_of_week:
            continue
        for hour in sorted(c.hour, reverse=True):
            if back == 0 and hour > at.hour:
                continue
            latest = at.minute if back == 0 and hour == at.hour else 59
            minutes = [m for m in c.minute if m <= latest]
            if minutes:
                return datetime(day.year, day.month, day.day, hour, max(minutes), tzinfo=UTC)
    raise ConfigError(f"cron expression {expr!r} never fires")


def slot_id(slot: datetime) -> str:
    return slot.strftime("%Y%m%dT%H%MZ")


class Skipped(BaseModel):
    """A job left out of a run: where it came from and why."""

    reason: str
    line: int | None = None
    file: str | None = None


def doc_id(stem: str, taken: set[str]) -> str:
    """A document id from a file stem: [A-Za-z0-9_.-], at most 64 chars, unique in the job."""
    base = _DOC_ID_BAD.sub("-", stem).strip("-")[:60] or "doc"
    found, n = base, 1
    while found in taken:
        n += 1
        found = f"{base}-{n}"
    taken.add(found)
    return found


def load_jobs(run: ScheduledRun) -> tuple[list[tuple[int, dict[str, Any]]], list[Skipped]]:
    """The run's job specs, numbered from 1 (a JSONL line's number), and what was skipped."""
    defaults: dict[str, Any] = {
        "kind": run.kind,
        "tenant": run.tenant,
        "budget_usd": run.budget_usd,
        "latency_profile": run.latency_profile,
        "deadline_s": run.deadline_s,
        "priority": run.priority,
    }
    defaults = {k: v for k, v in defaults.items() if v is not None}
    return _folder_job(run, defaults) if run.source == "folder" else _jsonl_jobs(run, defaults)


def _folder_job(
    run: ScheduledRun, defaults: dict[str, Any]
) -> tuple[list[tuple[int, dict[str, Any]]], list[Skipped]]:
    folder, skipped, docs, taken = Path(run.path), [], [], set[str]()
    files = sorted(p for p in folder.glob("*") if p.suffix in (".txt", ".md") and p.is_file())
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            skipped.append(Skipped(file=path.name, reason=f"unreadable: {exc}"))
            continue
        if not text.strip():
            skipped.append(Skipped(file=path.name, reason="empty file"))
            continue
        docs.append({"id": doc_id(path.stem, taken), "text": text})
    if not docs:
        skipped.append(Skipped(file=str(folder), reason="no readable *.txt or *.md files"))
        return [], skipped
    job = {**defaults, "input": {"question": run.question or "", "documents": docs}}
    return [(1, job)], skipped


def _jsonl_jobs(
    run: ScheduledRun, defaults: dict[str, Any]
) -> tuple[list[tuple[int, dict[str, Any]]], list[Skipped]]:
    jobs: list[tuple[int, dict[str, Any]]] = []
    skipped: list[Skipped] = []
    try:
        lines = Path(run.path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        return [], [Skipped(file=run.path, reason=f"unreadable: {exc}")]
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            spec = json.loads(line)
        except json.JSONDecodeError as exc:
            skipped.append(Skipped(line=number, reason=f"not valid JSON: {exc.msg}"))
            continue
        if not isinstance(spec, dict):
            skipped.append(Skipped(line=number, reason="not a JSON object"))
            continue
        jobs.append((number, {**defaults, **spec}))
    return jobs, skipped


class RunSummary(BaseModel):
    """What one run did: jobs submitted (new) or reused (same slot), how they ended, cost."""

    name: str
    run_id: str
    jobs: int = 0
    submitted: int = 0
    reused: int = 0
    succeeded: int = 0
    degraded: int = 0
    failed: int = 0
    unfinished: int = 0
    refused: int = 0
    skipped: list[Skipped] = Field(default_factory=list)
    cost_usd: float = 0.0
    job_ids: list[str] = Field(default_factory=list)
    started_at: float = 0.0
    finished_at: float | None = None

    @property
    def finished(self) -> int:
        return self.succeeded + self.degraded + self.failed

    @property
    def ok(self) -> bool:
        """Every job ran and succeeded or degraded, and nothing was skipped or refused."""
        bad = self.failed + self.unfinished + self.refused + len(self.skipped)
        return bad == 0

    def fields(self) -> dict[str, str]:
        """The summary as flat stream fields."""
        data = self.model_dump(mode="json")
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}


def run_scheduled(
    name: str,
    settings: FleetlineSettings,
    producer: Producer,
    store: StateStore,
    progress: Progress | None = None,
    *,
    run_id: str | None = None,
    now: float | None = None,
) -> RunSummary:
    """Submit a scheduled run's jobs, wait for them, and record the summary in its audit stream.

    Args:
        name: a run of FLEETLINE_SCHEDULE_RUNS (UnknownSchedule otherwise).
        settings: the fleet's settings.
        producer: submits the jobs (validation first: a bad job is skipped, never half sent).
        store: where the jobs' records are polled.
        progress: called with (jobs finished, jobs in the run) on every poll.
        run_id: the run's identity in idempotency keys; default: the current cron slot.
        now: the time of the trigger (tests).
    """
    run = get_run(settings, name)
    now = time.time() if now is None else now
    run_id = run_id or slot_id(cron_slot(run.cron, now))
    client, key = store.client, keys.scheduled_run(name, run_id)
    jobs, skipped = load_jobs(run)
    summary = RunSummary(
        name=name, run_id=run_id, jobs=len(jobs), skipped=skipped, started_at=time.time()
    )
    _save(client, key, summary, "submitting")
    for n, spec in jobs:
        try:
            receipt = producer.submit({**spec, "idempotency_key": f"schedule:{name}:{run_id}:{n}"})
        except SpecError as exc:
            summary.skipped.append(
                Skipped(line=n if run.source == "jsonl" else None, reason=str(exc))
            )
            continue
        except KillSwitchTripped as exc:
            summary.refused = sum(1 for m, _ in jobs if m >= n)
            summary.skipped.append(Skipped(reason=f"{summary.refused} jobs refused: {exc}"))
            break
        summary.job_ids.append(receipt.job_id)
        if receipt.created:
            summary.submitted += 1
        else:
            summary.reused += 1
    summary.jobs = len(summary.job_ids)
    summary.skipped.sort(key=lambda s: (s.line is None, s.line or 0))
    _save(client, key, summary, "waiting")
    _wait(store, summary, run.wait_s, progress, lambda: _save(client, key, summary, "waiting"))
    summary.finished_at = time.time()
    _save(client, key, summary, "done")
    client.xadd(
        keys.schedule_audit(name),
        summary.fields(),  # type: ignore[arg-type]
        maxlen=keys.SCHEDULE_AUDIT_MAXLEN,
        approximate=True,
    )
    return summary


def _wait(
    store: StateStore,
    summary: RunSummary,
    wait_s: float | None,
    progress: Progress | None,
    on_change: Callable[[], None],
) -> None:
    """Poll the state store until every job is final or the wait runs out."""
    pending, total, cost = list(summary.job_ids), len(summary.job_ids), 0.0
    # Without wait_s: until the latest deadline among the jobs, plus a grace.
    give_up = time.time() + wait_s if wait_s is not None else 0.0
    if progress:
        progress(0, total)
    while pending:
        for job_id in list(pending):
            try:
                job = store.get(job_id)
            except JobNotFound:
                summary.failed += 1
                pending.remove(job_id)
                continue
            if wait_s is None:
                give_up = max(give_up, job.deadline_at + WAIT_GRACE_S)
            if not job.status.terminal:
                continue
            pending.remove(job_id)
            cost += job.cost_usd
            if job.status is JobStatus.SUCCEEDED:
                summary.succeeded += 1
            elif job.status is JobStatus.DEGRADED:
                summary.degraded += 1
            else:
                summary.failed += 1
        summary.cost_usd = round(cost, 9)
        if progress:
            progress(summary.finished, total)
        on_change()
        if not pending or time.time() >= give_up:
            break
        time.sleep(POLL_S)
    summary.unfinished = len(pending)


def _save(client: Any, key: str, summary: RunSummary, status: str) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.hset(key, mapping={**summary.fields(), "status": status})
    pipe.expire(key, keys.SCHEDULED_RUN_TTL_S)
    pipe.execute()
