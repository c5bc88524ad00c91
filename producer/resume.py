"""`fleetline resume JOB`: a pipeline job run again from a stage, as a new run of the job.

The stages before that stage are neither run nor charged again: the new run starts from
the checkpoint of the one before it. Starting a run is a compare-and-set on the job's
version, so two resumes at once start one run; the kill switches refuse a resume as they
refuse a new job. Each run has its own deadline, ends once, and keeps what the earlier
runs did (`result.runs`), so `fleetline diff` can show them side by side.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from fleetline.producer.submit import Producer
from fleetline.shared import keys
from fleetline.shared.errors import JobNotFound, KillSwitchTripped, NotResumable
from fleetline.shared.fleet import Plan, Tool
from fleetline.shared.killswitch import SwitchState, applicable_keys
from fleetline.shared.pattern_messages import StageMessage, send_stage
from fleetline.shared.pipeline_state import PipelineStore, StageEntry, parse_table, resumed_table
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import JobSpec, JobStatus
from fleetline.shared.settings import FleetlineSettings
from fleetline.shared.trace_store import root_context


@dataclass(frozen=True)
class Resumed:
    """The run a resume started: its number, first stage, model and deadline."""

    job_id: str
    run: int
    start: str
    model: str | None
    deadline_at: float


def resume_job(
    producer: Producer,
    job_id: str,
    from_stage: str | None = None,
    model: str | None = None,
    deadline_s: float | None = None,
    actor: str = "producer",
) -> Resumed:
    """Start the next run of a pipeline job that has ended.

    Args:
        from_stage: the stage to run from (default: the first one that is not ok); needed
            for a job that succeeded.
        model: the model that stage runs on (default: its tier's).
        deadline_s: the run's deadline from now (default: the job's own, as submitted).

    Raises:
        NotResumable: naming why the job cannot run again.
        KillSwitchTripped: a spend kill switch covers the job's tenant.
        JobNotFound: no such job.
    """
    settings = producer.settings
    record = producer.store.raw(job_id)
    spec = JobSpec.model_validate_json(record["spec"])
    if spec.kind not in settings.fleet.jobs:
        raise NotResumable(f"job {job_id}: this fleet has no job kind {spec.kind!r}")
    plan = settings.fleet.plan(spec.kind, spec.input)
    if plan.shape != "pipeline" or not record.get("stages"):
        raise NotResumable(f"job {job_id} is a {plan.shape}: only a pipeline resumes")
    status = JobStatus(record["status"])
    run = int(record.get("run") or 1)
    if not status.terminal:
        raise NotResumable(f"job {job_id} is still {status.value} (run {run})")
    table = parse_table(record["stages"])
    start = _start(job_id, status, table, from_stage)
    _check_model(plan, start, model, settings)
    store = PipelineStore(producer.store.client, settings.limits.finished_ttl_s)
    if start > 0 and not store.client.hexists(
        keys.job_checkpoints(job_id), table[start - 1].step_id
    ):
        raise NotResumable(f"job {job_id}: the checkpoint of stage {table[start - 1].name} is gone")
    seconds = _deadline_s(spec, deadline_s, settings)
    deadline_at = time.time() + seconds
    new_run = run + 1
    fresh = resumed_table(table, start, new_run, model)
    pattern = json.loads(record.get("pattern") or "{}")
    earlier = {
        "run": run,
        "status": status.value,
        "from": pattern.get("run_from"),
        "model": pattern.get("run_model"),
        "cost_usd": round(sum(e.cost_usd for e in table if e.run == run), 9),
        "stages": [e.model_dump(mode="json") for e in table],
    }
    code, detail = store.resume(
        job_id,
        int(record["version"]),
        new_run,
        fresh,
        {
            "run": new_run,
            "run_from": table[start].name,
            "run_model": model,
            "runs": [*pattern.get("runs", []), earlier],
        },
        deadline_at,
        actor,
        model,
        applicable_keys(spec.tenant, None),
    )
    _refused(job_id, code, detail, new_run)
    message = StageMessage(
        job_id=job_id,
        kind=spec.kind,
        tenant=spec.tenant,
        deadline_at=deadline_at,
        budget_usd=spec.budget_usd,
        budget_tokens=spec.max_tokens,
        priority=9 - spec.priority,
        run=new_run,
        index=start,
        input_from=table[start - 1].step_id if start > 0 else None,
        model=model,
        trace=root_context(producer.store.client, job_id),
    )
    try:
        send_stage(producer.app, settings, message, plan.stages[start].step, fresh[start].step_id)
    except Exception as exc:
        trip = RoundTrip(producer.store.client)
        error = {"answer": None, "error": f"enqueue failed: {exc}"}
        producer.store.queue_finalize(
            trip, job_id, JobStatus.FAILED, 0.0, error, actor, "enqueue failed", run=new_run
        )
        trip.execute()
        raise NotResumable(f"job {job_id}: could not enqueue run {new_run}: {exc}") from exc
    return Resumed(job_id, new_run, table[start].name, model, deadline_at)


def _start(job_id: str, status: JobStatus, table: list[StageEntry], from_stage: str | None) -> int:
    """The index of the stage the new run starts from."""
    names = [e.name for e in table]
    missing = next((i for i, e in enumerate(table) if not e.ok), None)
    if from_stage is None:
        if status is JobStatus.SUCCEEDED or missing is None:
            raise NotResumable(
                f"job {job_id} {status.value}: name the stage to run again with --from "
                f"(one of {', '.join(names)})"
            )
        return missing
    if from_stage not in names:
        raise NotResumable(f"--from: job {job_id} has no stage {from_stage!r} ({', '.join(names)})")
    start = names.index(from_stage)
    if missing is not None and start > missing:
        raise NotResumable(
            f"--from {from_stage}: stage {names[missing]} before it has no checkpoint; "
            f"resume from {names[missing]} or an earlier stage"
        )
    return start


def _check_model(plan: Plan, start: int, model: str | None, settings: FleetlineSettings) -> None:
    if model is None:
        return
    if model not in settings.models:
        known = ", ".join(sorted(settings.models))
        raise NotResumable(f"--model: no model {model!r} in the price table (known: {known})")
    stage = plan.stages[start]
    if isinstance(stage.step.worker, Tool):
        raise NotResumable(f"--model: stage {stage.name} runs tool {stage.step.worker_type}")


def _deadline_s(spec: JobSpec, given: float | None, settings: FleetlineSettings) -> float:
    profile = settings.latency_profiles[spec.latency_profile or settings.default_latency_profile]
    seconds = given or spec.deadline_s or profile.total_s
    if not 0 < seconds <= settings.limits.max_deadline_s:
        raise NotResumable(
            f"--deadline-s: {seconds:g} is not in (0, {settings.limits.max_deadline_s:g}]"
        )
    return seconds


def _refused(job_id: str, code: int, detail: str | None, run: int) -> None:
    """Raise what pipeline_resume.lua's refusal means."""
    if code == 1:
        return
    if code == -1:
        raise NotResumable(
            f"job {job_id} changed while resuming (now version {detail}): another resume may "
            f"have started run {run} first (see fleetline status {job_id})"
        )
    if code == -2:
        raise NotResumable(f"job {job_id} is {detail}: another resume started it first")
    if code == -4 and detail is not None:
        switch = SwitchState.from_json(detail)
        resets = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(switch.resets_at))
        raise KillSwitchTripped(
            f"refused: the {switch.scope} {switch.window} spend limit is reached "
            f"({switch.reason}); it resets at {resets}",
            resets_at=switch.resets_at,
        )
    raise JobNotFound(f"no job {job_id}")
