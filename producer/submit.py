"""submit(): validate at the edge, admit, record the job, and send its steps by task name.

Nothing reaches Redis until the spec and its input are valid; the producer imports no
worker module and no model SDK.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from celery import Celery
from pydantic import ValidationError
from redis.exceptions import RedisError

from fleetline.producer import patterns
from fleetline.shared import fan_in_join, json_limits, keys, metrics, otel, trace_store
from fleetline.shared.celery_app import make_celery
from fleetline.shared.errors import (
    FleetlineError,
    IdempotencyConflict,
    KillSwitchTripped,
    SpecError,
    StoreUnavailable,
)
from fleetline.shared.fleet import Plan, PlanError, Step, Tool
from fleetline.shared.killswitch import SwitchState, applicable_keys
from fleetline.shared.redis_client import make_redis
from fleetline.shared.schemas import (
    PAYLOAD_VERSION,
    JobSpec,
    JobStatus,
    StepKind,
    SubtaskPayload,
    SubtaskSpec,
)
from fleetline.shared.settings import FleetlineSettings
from fleetline.shared.state import StateStore

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Receipt:
    """What submit() returns: the job's id, and whether this call created it."""

    job_id: str
    created: bool
    subtasks: int


@dataclass(frozen=True)
class PlannedJob:
    """A plan as the wire carries it: its parallel steps (a pipeline's stages, a debate's
    agents) and its then-step (a debate's judge; a pipeline has none)."""

    subtasks: list[SubtaskSpec]
    then: SubtaskSpec | None
    plan: Plan | None = None


def step_spec(step: Step, settings: FleetlineSettings) -> SubtaskSpec:
    """A plan's step as its worker receives it, with its policy's tier and token limit."""
    policy = settings.worker(step.worker_type)
    if isinstance(step.worker, Tool):
        return SubtaskSpec(
            id=step.id,
            worker_type=step.worker_type,
            kind=StepKind.TOOL,
            args=step.args,
            critical=step.critical,
        )
    return SubtaskSpec(
        id=step.id,
        worker_type=step.worker_type,
        tier=policy.tier,
        instruction=step.goal,
        text=step.text,
        critical=step.critical,
        max_output_tokens=policy.max_output_tokens,
    )


def planned(plan: Plan, settings: FleetlineSettings) -> PlannedJob:
    """The wire form of a plan (a fan_out always has its then-step)."""
    return PlannedJob(
        subtasks=[step_spec(s, settings) for s in plan.steps],
        then=step_spec(plan.then, settings) if plan.then is not None else None,
        plan=plan,
    )


def validation_errors(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """pydantic errors as (field path, reason) pairs."""
    errors = []
    for err in exc.errors():
        path = ".".join(str(p) for p in (*([prefix] if prefix else []), *err["loc"]))
        errors.append((path or prefix or "spec", err["msg"]))
    return errors


def check_raw(raw: JobSpec | dict[str, Any], settings: FleetlineSettings) -> None:
    """Refuse a spec that is too deep or holds what JSON cannot round-trip (SpecError).

    A JobSpec's fields are typed already; only its free-form `input` is walked.
    """
    max_depth = settings.limits.max_json_depth
    errors = (
        json_limits.problems(raw.input, max_depth, ("input",))
        if isinstance(raw, JobSpec)
        else json_limits.problems(raw, max_depth)
    )
    if errors:
        raise SpecError(errors)


def parse_spec(
    raw: JobSpec | dict[str, Any], settings: FleetlineSettings
) -> tuple[JobSpec, PlannedJob]:
    """Validate a spec and plan it, or raise SpecError naming every bad field.

    A dict is first checked without recursion (json_limits: depth, numbers, types), so
    that nothing recursive (pydantic, json.dumps) ever sees hostile input.
    """
    check_raw(raw, settings)
    try:
        spec = raw if isinstance(raw, JobSpec) else JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(validation_errors(exc)) from None
    size = len(json.dumps(spec.input))
    if size > settings.limits.max_input_bytes:
        raise SpecError([("input", f"{size} bytes, over {settings.limits.max_input_bytes}")])
    jobs = settings.fleet.jobs
    if spec.kind not in jobs:
        known = ", ".join(sorted(jobs))
        raise SpecError([("kind", f"unknown job kind {spec.kind!r} (known: {known})")])
    profile = spec.latency_profile or settings.default_latency_profile
    if profile not in settings.latency_profiles:
        known = ", ".join(sorted(settings.latency_profiles))
        raise SpecError([("latency_profile", f"unknown profile {profile!r} (known: {known})")])
    if (spec.deadline_s or 0) > settings.limits.max_deadline_s:
        raise SpecError([("deadline_s", f"at most {settings.limits.max_deadline_s:g} seconds")])
    if spec.callback_url is not None:
        refused = settings.api.callback_refusal(spec.tenant, spec.callback_url)
        if refused is not None:
            raise SpecError([("callback_url", refused)])
    try:
        plan = settings.fleet.plan(spec.kind, spec.input)
    except ValidationError as exc:
        raise SpecError(validation_errors(exc, "input")) from None
    except PlanError as exc:
        raise SpecError([("input", str(exc))]) from None
    patterns.check(plan, spec, settings)
    return spec, planned(plan, settings)


class Producer:
    """Submits jobs. Build one per process; it holds a Redis client and a Celery app."""

    def __init__(self, settings: FleetlineSettings, client: redis.Redis, app: Celery) -> None:
        self.settings = settings
        self.store = StateStore(client, settings.limits.finished_ttl_s)
        self.app = app
        # The then-step queues this process has told the kill switches about.
        self._fan_in_queues: set[str] = set()
        # Its messages are counted when this host's processes record metrics.
        metrics.init_metrics(settings.metrics)
        otel.init_tracing(settings.trace)

    @classmethod
    def from_settings(cls, settings: FleetlineSettings) -> Producer:
        """A producer whose Redis calls give up after `redis.submit_timeout_s`."""
        client = make_redis(settings, timeout_s=settings.redis.submit_timeout_s)
        return cls(settings, client, make_celery(settings, send_only=True))

    def submit(self, raw: JobSpec | dict[str, Any]) -> Receipt:
        """Validate, record and enqueue a job; the same idempotency key returns the same job.

        The job's trace starts here: this span is its root, and every step's span is its
        child (its context travels in the messages' headers).
        """
        if not otel.enabled():
            return self._submit(raw, None)
        from opentelemetry.trace import SpanKind, StatusCode

        span = otel.tracer().start_span("submit", kind=SpanKind.PRODUCER)
        try:
            receipt = self._submit(raw, span)
        except BaseException as exc:
            # The refusal's type only: its message may quote the input.
            span.set_attribute(otel.ERROR_TYPE, type(exc).__name__)
            span.set_status(StatusCode.ERROR, type(exc).__name__)
            span.end()
            raise
        span.set_attributes({otel.JOB_ID: receipt.job_id, otel.JOB_CREATED: receipt.created})
        span.end()
        if receipt.created:
            # Only a new job's: another submit of a job's idempotency key is not its root.
            trace_store.write_pending(
                self.store.client,
                receipt.job_id,
                span.get_span_context().trace_id,
                self.settings.limits.finished_ttl_s,
                self.settings.trace.max_spans,
            )
        return receipt

    def _submit(self, raw: JobSpec | dict[str, Any], span: Span | None) -> Receipt:
        spec, plan = parse_spec(raw, self.settings)
        job_id = uuid.uuid4().hex
        if span is not None:
            span.update_name(f"submit {spec.kind}")
            span.set_attributes(
                {
                    otel.OPERATION: "invoke_workflow",
                    otel.JOB_KIND: spec.kind,
                    otel.TENANT: spec.tenant,
                    otel.JOB_STEPS: len(plan.subtasks) + 1,
                }
            )
        profile = self.settings.latency_profiles[
            spec.latency_profile or self.settings.default_latency_profile
        ]
        deadline_s = spec.deadline_s or profile.total_s
        now = time.time()
        deadline_at = now + deadline_s
        # Subtasks must be done in their share of the deadline, so synthesis keeps its own.
        workers_deadline_at = now + deadline_s * profile.workers_share()
        fields = {
            "kind": spec.kind,
            "tenant": spec.tenant,
            "spec": spec.model_dump_json(),
            "subtask_ids": json.dumps([s.id for s in plan.subtasks]),
            "deadline_at": repr(deadline_at),
            "budget_usd": repr(spec.budget_usd),
        }
        if spec.callback_url is not None:
            # finalize_job.lua makes the callback due when it sees this field.
            fields["callback_url"] = spec.callback_url
        if plan.plan is not None:
            fields.update(patterns.record_fields(plan.plan))
        headers = otel.headers_for(span) if span is not None else {}
        if plan.then is not None and (plan.plan is None or plan.plan.shape == "fan_out"):
            fields.update(self._join_fields(job_id, spec, plan, deadline_at, headers))
        try:
            # Admission (kill switches), idempotency and the record: one round trip.
            made = self.store.create_job(
                job_id,
                fields,
                deadline_at,
                spec.idempotency_key,
                spec.tenant,
                refusing_keys=applicable_keys(spec.tenant, None),
            )
            if made.refused_by is not None:
                raise _refusal(SwitchState.from_json(made.refused_by))
            if not made.created:
                if self.store.raw(made.job_id).get("spec") != fields["spec"]:
                    raise IdempotencyConflict(made.job_id)
                return Receipt(made.job_id, False, len(plan.subtasks))
            self._enqueue(
                job_id, spec, plan, workers_deadline_at, deadline_at, profile.batching, headers
            )
        except RedisError as exc:
            raise StoreUnavailable(f"Redis unavailable while submitting: {exc}") from exc
        return Receipt(job_id, True, len(plan.subtasks))

    def _enqueue(
        self,
        job_id: str,
        spec: JobSpec,
        plan: PlannedJob,
        workers_deadline_at: float,
        deadline_at: float,
        batchable: bool,
        headers: dict[str, str],
    ) -> None:
        # kombu's Redis priorities run 0 (first) to 9; a JobSpec's 9 is the most urgent.
        options: dict[str, Any] = {"priority": 9 - spec.priority}
        if headers:
            # The job's trace context (traceparent): Celery keeps it on retries and
            # redeliveries, and the job's fan-in message carries it too.
            options["headers"] = headers
        if plan.plan is not None and plan.plan.shape != "fan_out":
            self._start_pattern(job_id, spec, plan.plan, deadline_at, options["priority"], headers)
            return
        assert plan.then is not None, "a fan_out has its then-step"
        self._note_fan_in_queue(plan.then.worker_type)
        job = _bounds(job_id, spec)
        header = [
            self.app.signature(
                s.worker_type,
                args=(
                    {
                        # Built as a dict, not a SubtaskPayload, so say its version (one
                        # without a version is read as 1, the payload before versions).
                        "version": PAYLOAD_VERSION,
                        **job,
                        "deadline_at": workers_deadline_at,
                        "batchable": batchable,
                        "subtask": s.model_dump(mode="json"),
                    },
                ),
                task_id=f"{job_id}:{s.id}",
                # Celery would put a repr of the payload (documents included) in every
                # message's headers, where Flower shows it; a label is enough and cheaper.
                argsrepr=f"({s.id})",
                kwargsrepr="{}",
                **options,
            )
            for s in plan.subtasks
        ]
        try:
            # The steps only: the worker whose outcome completes the set sends the fan-in.
            with self.app.producer_or_acquire() as producer:
                for signature in header:
                    signature.apply_async(producer=producer)
        except Exception as exc:
            # Whatever was already queued finds the job final and its outcome is kept.
            self.store.finalize(
                job_id,
                JobStatus.FAILED,
                0.0,
                {"error": f"enqueue failed: {exc}"},
                "producer",
                reason="enqueue failed",
            )
            raise FleetlineError(f"could not enqueue job {job_id}: {exc}") from exc

    def _join_fields(
        self,
        job_id: str,
        spec: JobSpec,
        plan: PlannedJob,
        deadline_at: float,
        headers: dict[str, str],
    ) -> dict[str, str]:
        """The job record's fields of a fan-out's join: how many outcomes complete it, and
        the fan-in message the worker that records the last one sends."""
        assert plan.then is not None, "a fan_out has its then-step"
        context = {
            **_bounds(job_id, spec),
            "kind": spec.kind,
            "deadline_at": deadline_at,
            "expected": len(plan.subtasks),
            "then": plan.then.model_dump(mode="json"),
        }
        then = plan.then.worker_type
        policy = self.settings.worker(then)
        message = fan_in_join.message_field(
            context,
            queue=then,
            priority=9 - spec.priority,
            headers=headers,
            soft_time_limit_s=policy.soft_time_limit_s,
            time_limit_s=policy.time_limit_s,
        )
        return {"fan_in": message, "expected": str(len(plan.subtasks))}

    def _start_pattern(
        self,
        job_id: str,
        spec: JobSpec,
        plan: Plan,
        deadline_at: float,
        priority: int,
        trace: dict[str, str],
    ) -> None:
        # A pipeline's first stage or a debate's first round; the workers send the rest.
        try:
            patterns.send_first(
                self.app, self.settings, job_id, spec, plan, deadline_at, priority, trace
            )
        except Exception as exc:
            self.store.finalize(
                job_id, JobStatus.FAILED, 0.0, {"error": f"enqueue failed: {exc}"}, "producer"
            )
            raise FleetlineError(f"could not enqueue job {job_id}: {exc}") from exc

    def _note_fan_in_queue(self, queue: str) -> None:
        # Once per process and queue: kill switches must never pause where jobs end.
        if queue not in self._fan_in_queues:
            self.store.client.sadd(keys.fan_in_queues(), queue)
            self._fan_in_queues.add(queue)


def _refusal(switch: SwitchState) -> KillSwitchTripped:
    resets = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(switch.resets_at))
    return KillSwitchTripped(
        f"refused: the {switch.scope} {switch.window} spend limit is reached "
        f"({switch.reason}); it resets at {resets}",
        resets_at=switch.resets_at,
    )


__all__ = ["PlannedJob", "Producer", "Receipt", "SubtaskPayload", "parse_spec"]


def _bounds(job_id: str, spec: JobSpec) -> dict[str, Any]:
    """What every step of the job runs under, as its messages say it."""
    return {
        "job_id": job_id,
        "tenant": spec.tenant,
        "budget_usd": spec.budget_usd,
        "budget_tokens": spec.max_tokens,
    }
