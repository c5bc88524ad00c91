"""One subtask, start to finish: guards, the model call through the gate, bookkeeping.

Celery is not imported here: the task adapter (`workers.task`) decides what a retryable
error means for the message. Redis costs one round trip before the call (every guard's
check) and one after it (every guard's closing write and the outcome's record).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fleetline.shared.errors import ConfigError, ModelTimeout, ToolTimeout
from fleetline.shared.fleet import Agent, Tool
from fleetline.shared.ledger import Scope, scopes_for
from fleetline.shared.models.base import ModelRequest
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import OutcomeError, OutcomeStatus, SubtaskOutcome, SubtaskPayload
from fleetline.shared.settings import FleetlineSettings, get_settings
from fleetline.workers.gate import GateResult, call_through_gate, merge_usage
from fleetline.workers.guards import (
    BreakerGuard,
    BudgetGuard,
    CacheGuard,
    CancelledGuard,
    CrashGuard,
    DeadlineGuard,
    Defer,
    FairShareGuard,
    Guard,
    KillSwitchGuard,
    RecordedGuard,
    Reroute,
    WaitToRun,
)
from fleetline.workers.runtime import WorkerRuntime
from fleetline.workers.spend import RunSpend
from fleetline.workers.step_trace import StepTrace, now_ns
from fleetline.workers.tool_call import call_tool


@dataclass(frozen=True)
class Attempt:
    """Which delivery of the subtask this is, and when it started."""

    number: int
    started_at: float


# Every guard by its FLEETLINE_WORKER_GUARDS name, in the order an agent's run passes them.
_AGENT_GUARDS: tuple[tuple[str, Callable[[], Guard]], ...] = (
    ("recorded", RecordedGuard),
    ("cancelled", CancelledGuard),
    ("deadline", DeadlineGuard),
    ("fair_share", FairShareGuard),
    ("crash", CrashGuard),
    ("killswitch", KillSwitchGuard),
    ("breaker", BreakerGuard),
    ("budget", BudgetGuard),
    ("cache", CacheGuard),
)
# A tool has no model, so no spend to hold, switch or cache; its breaker is the tool's own
# pybreaker CircuitBreaker around the call.
_TOOL_GUARDS = ("recorded", "cancelled", "deadline", "fair_share", "crash")


def _guards_on(settings: FleetlineSettings | None) -> frozenset[str]:
    return (settings if settings is not None else get_settings()).guards_on


def default_guards(settings: FleetlineSettings | None = None) -> list[Guard]:
    """The guards of an agent's run, in the order they run (fresh ones: they hold per-run
    state): every one FLEETLINE_WORKER_GUARDS leaves on (all by default).

    settings: whose `worker_guards` decide; the process's settings when None.
    """
    on = _guards_on(settings)
    return [make() for name, make in _AGENT_GUARDS if name in on]


def tool_guards(settings: FleetlineSettings | None = None) -> list[Guard]:
    """The guards of a tool's run (recorded, cancelled, deadline, fair share, crash): those
    of them FLEETLINE_WORKER_GUARDS leaves on.

    settings: whose `worker_guards` decide; the process's settings when None.
    """
    on = _guards_on(settings)
    return [make() for name, make in _AGENT_GUARDS if name in _TOOL_GUARDS and name in on]


def closing_guards(worker: Agent | Tool) -> list[Guard]:
    """The guards of a fan-out's then-step: those of its kind but fair share (its job has
    had its turn; making its last step wait would only hold its results back)."""
    guards = default_guards() if isinstance(worker, Agent) else tool_guards()
    return [g for g in guards if not isinstance(g, FairShareGuard)]


@dataclass
class SubtaskRun:
    """One delivery of one step (an agent's or a tool's) through the guards, the call and
    the bookkeeping."""

    payload: SubtaskPayload
    worker: Agent | Tool
    runtime: WorkerRuntime
    attempt: Attempt
    actor: str = ""
    task_name: str = ""
    task_id: str = ""
    guards: list[Guard] = field(default_factory=list)
    model: str = ""
    # Extra outcome fields guards decide (e.g. which model served after a fallback).
    notes: dict[str, Any] = field(default_factory=dict)
    # Set while checks run once an earlier guard has ended or rerouted the run.
    stopped: bool = False
    # Whether a provider was called for the current model, and how the call failed.
    called: bool = False
    call_error: Exception | None = None
    # The holds and bills of this run's provider calls.
    spend: RunSpend = field(init=False)
    # This delivery, as the crash guard marks it in flight (once, however often it checks).
    delivery: str = field(default_factory=lambda: uuid.uuid4().hex)
    # The attempt's spans (untraced unless the task adapter starts them).
    trace: StepTrace = field(default_factory=StepTrace)
    # The fan-in message this run's record said to send: it completed a fan-out's join.
    fan_in_due: str | None = None
    _entered: list[Guard] = field(default_factory=list)
    _requests: dict[str, ModelRequest] = field(default_factory=dict)
    # A call id that replaces the default one for a model (see renew_call_id).
    _call_ids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spend = RunSpend(self)
        if self.payload.rate_waited_s:
            self.notes["rate_waited_s"] = self.payload.rate_waited_s
        if not self.guards:
            self.guards = default_guards() if isinstance(self.worker, Agent) else tool_guards()
        if isinstance(self.worker, Agent) and not self.model:
            self.model = self.runtime.settings.model_chain(self.worker.name)[0]

    @property
    def agent(self) -> Agent:
        """The agent of this run (the guards that hold model spend run only for agents)."""
        if not isinstance(self.worker, Agent):
            raise ConfigError(f"{self.worker.name} is a tool, not an agent")
        return self.worker

    def outcome(
        self,
        status: OutcomeStatus,
        category: str | None = None,
        message: str = "",
        **fields: Any,
    ) -> SubtaskOutcome:
        """An outcome of this run; errors carry a category and a message."""
        return SubtaskOutcome.model_validate(
            {
                "subtask_id": self.payload.subtask.id,
                "worker_type": self.payload.subtask.worker_type,
                "status": status,
                "error": OutcomeError(category=category, message=message) if category else None,
                "attempts": self.attempt.number,
                "critical": self.payload.subtask.critical,
                "latency_ms": (time.time() - self.attempt.started_at) * 1000,
                **self.notes,
                **fields,
            }
        )

    def before(self) -> SubtaskOutcome | None:
        """Every guard's check, in one round trip; an outcome ends the subtask early.

        A guard that rules the current model out (an open breaker, no budget left) moves
        the run down the worker type's model chain; only its per-model guards run again.
        """
        chain = self.runtime.settings.model_chain(self.payload.subtask.worker_type)
        remaining = iter(chain[chain.index(self.model) + 1 :] if self.model in chain else [])
        pending = list(self.guards)
        trip = RoundTrip(self.runtime.redis)
        while True:
            started_ns = now_ns()
            checks = [guard.before(self, trip) for guard in pending]
            self._entered += [g for g in pending if g not in self._entered]
            replies = trip.execute()
            # Every check reads its replies, so each guard knows what it holds; the first
            # verdict decides.
            verdict: SubtaskOutcome | Reroute | Defer | None = None
            self.stopped = False
            for guard, check in zip(pending, checks, strict=True):
                found = check(replies)
                if found is not None and verdict is None:
                    verdict = found
                    self.stopped = True
                    self.trace.guard(guard, found, started_ns, self)
            if isinstance(verdict, Defer):
                raise WaitToRun(verdict)
            if not isinstance(verdict, Reroute):
                return verdict
            following = next(remaining, None)
            if following is None:
                return verdict.outcome
            trip = RoundTrip(self.runtime.redis)
            pending = [g for g in self.guards if g.per_model]
            for guard in pending:
                guard.after(self, None, trip)
            self.notes.setdefault("routed_from", self.model)
            self.notes["route_reason"] = verdict.reason
            self.model = following
            self.called = False

    def wait_for_window(self, seconds: float, *, counted: bool = True) -> None:
        """Sleep a short wait (see WAIT_IN_PLACE_S) for a rate window to open, counted on
        the outcome as `rate_waited_s` (`counted`)."""
        # A little spread, so that the fleet's waiting calls do not all arrive at once.
        seconds += random.uniform(0.0, 0.05)
        started_ns = now_ns()
        time.sleep(seconds)
        self.trace.wait(started_ns, seconds, counted)
        if counted:
            self.notes["rate_waited_s"] = self.notes.get("rate_waited_s", 0.0) + seconds

    def call_id(self) -> str:
        """The ledger's id of this delivery's first call on the current model."""
        default = (
            f"{self.payload.job_id}:{self.payload.subtask.id}:{self.attempt.number}:{self.model}"
        )
        return self._call_ids.get(self.model, default)

    def renew_call_id(self) -> ModelRequest:
        """The request under a call id of its own, for a delivery whose default id an
        earlier one already used up (settled, released or expired)."""
        self._call_ids[self.model] = f"{self.call_id()}:d{uuid.uuid4().hex[:8]}"
        self._requests.pop(self.model, None)
        return self.request()

    def request(self) -> ModelRequest:
        """The model request of this run, for its current model (built once per model)."""
        cached = self._requests.get(self.model)
        if cached is not None:
            return cached.model_copy(update={"timeout_s": self.call_timeout_s()})
        price = self.runtime.settings.models[self.model]
        self._requests[self.model] = request = ModelRequest(
            model=self.model,
            api_model=price.api_model or self.model,
            worker_type=self.payload.subtask.worker_type,
            instruction=self.agent.instruction(self.payload.subtask.instruction),
            document=self.payload.subtask.text,
            max_output_tokens=self.payload.subtask.max_output_tokens,
            timeout_s=self.call_timeout_s(),
            call_id=self.call_id(),
            attempt=self.attempt.number,
            job_id=self.payload.job_id,
            tenant=self.payload.tenant,
            output_schema=self.agent.output_schema,
        )
        return request

    def budget_scopes(self) -> list[Scope]:
        """The ledger scopes a call of this run is charged to, with their limits."""
        return scopes_for(
            self.runtime.settings.spend,
            job_id=self.payload.job_id,
            tenant=self.payload.tenant,
            worker_type=self.payload.subtask.worker_type,
            job_budget_usd=self.payload.budget_usd,
            job_budget_tokens=self.payload.budget_tokens,
        )

    def call(self) -> SubtaskOutcome:
        """The model call through the validation gate, or the tool's run.

        Raises RetryableStepError when another attempt may succeed.
        """
        if isinstance(self.worker, Tool):
            self.called = True
            return call_tool(self, self.worker)
        settings = self.runtime.settings
        policy = settings.worker(self.payload.subtask.worker_type)
        request = self.request()
        self.called = True
        price = settings.models[self.model]
        joined_ns = now_ns()
        batched, batch_size = self._batched(request)
        if batch_size:
            self.trace.batch_share(joined_ns, request, price, batched, batch_size)
        if batched is not None:
            # Its share of the batch call is billed under its own (held) call id.
            self.spend.bill(
                request.call_id, batched.tokens_in, batched.tokens_out, batched.cost_usd
            )
        if batched is not None and batched.output is not None:
            result = batched
        else:
            batch_size = 0  # it falls back to a call of its own
            single = request
            if batched is not None:
                # The first hold paid for the batch's share: this call needs its own.
                single = request.model_copy(update={"call_id": f"{request.call_id}:s"})
            result = call_through_gate(
                self.trace.client(
                    self.runtime.client(self.model), price, "first" if batched is None else "single"
                ),
                single,
                self.agent.output,
                self.spend,
                policy.correction_attempts,
                first_held=batched is None,
            )
            if batched is not None:
                result = merge_usage(result, batched)
        usage: dict[str, Any] = {
            "model": self.model,
            "tokens_in": result.tokens_in,
            "tokens_out": result.tokens_out,
            "cost_usd": result.cost_usd,
            "batch_size": batch_size,
        }
        if result.output is None:
            return self.outcome(
                OutcomeStatus.INVALID_OUTPUT, "invalid_output", result.errors, **usage
            )
        return self.outcome(OutcomeStatus.OK, output=result.output, **usage)

    def _batched(self, request: ModelRequest) -> tuple[GateResult | None, int]:
        """This call's share of a batch, when its worker type batches and the job's latency
        profile lets it wait for peers."""
        policy = self.runtime.settings.worker(self.payload.subtask.worker_type)
        if (
            not self.payload.batchable
            or policy.batch_max_size < 2
            or policy.pool not in ("threads", "gevent")
            or request.timeout_s < 2 * policy.batch_max_wait_ms / 1000
        ):
            return None, 0
        batcher = self.runtime.batcher(
            self.payload.subtask.worker_type, self.model, self.agent.output
        )
        return batcher.call(request)

    def call_timeout_s(self) -> float:
        """The smaller of the agent's own ceiling and what is left of the deadline."""
        agent = self.runtime.settings.worker(self.payload.subtask.worker_type).max_call_s
        return max(0.001, min(agent, self.payload.deadline_at - time.time()))

    def failure(self, exc: Exception) -> SubtaskOutcome:
        """The outcome of a run whose retries (or deadline) ran out."""
        self.call_error = exc
        timed_out = isinstance(exc, ModelTimeout | ToolTimeout)
        status = OutcomeStatus.TIMED_OUT if timed_out else OutcomeStatus.FAILED
        category = getattr(exc, "category", "internal")
        return self.outcome(
            status, category, str(exc) or type(exc).__name__, model=self.model or None
        )

    def finish(
        self, outcome: SubtaskOutcome, also: Callable[[RoundTrip], int] | None = None
    ) -> tuple[SubtaskOutcome, Any]:
        """Close every guard and record the outcome, in one round trip.

        `also` queues one more write into that round trip (synthesis: the job's finalize)
        and its reply comes back second. The outcome returned is the one recorded: for a
        duplicate delivery, the first one's.
        """
        self.spend.crash_if_told()
        self.trace.end(outcome, self)
        trip = RoundTrip(self.runtime.redis)
        for guard in self._entered:
            guard.after(self, outcome, trip)
        index = self.runtime.store.queue_record(trip, self.payload.job_id, outcome, self.actor)
        extra = also(trip) if also is not None else None
        # The attempt's spans ride along: keeping the trace costs no round trip.
        self.trace.queue_write(trip, self)
        replies = trip.execute()
        self.trace.written()
        self.spend.settled()
        extra_reply = replies[extra] if extra is not None else None
        self.fan_in_due = self.runtime.store.fan_in_due(replies[index])
        if self.runtime.store.recorded(replies[index]):
            return outcome, extra_reply
        first = self.runtime.store.outcomes(self.payload.job_id).get(outcome.subtask_id, outcome)
        return first, extra_reply

    def abandon(self) -> None:
        """Close every guard before a retry: nothing held stays held."""
        trip = RoundTrip(self.runtime.redis)
        for guard in self._entered:
            guard.after(self, None, trip)
        trip.execute()
        self.spend.settled()
        self._entered.clear()
