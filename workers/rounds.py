"""A debate's turn and judge tasks: each agent's turn of a round, the round's close, and
the judge's answer.

A turn runs on its agent's queue like a pipeline stage: it reads the history so far,
runs the agent's step through the guards on the question and that history, and counts
itself in its round in the outcome's round trip. The turn that completes the round's
quorum (or is the last to finish) closes it: the consensus check is pure code on the
answers that closed it, then the next round is reserved against the job's budget and
sent, or the judge is. The judge reads the whole history and ends the job.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from redis.exceptions import RedisError

from fleetline.shared.debate_budget import round_bound
from fleetline.shared.debate_state import TurnRead
from fleetline.shared.fleet import Plan, Step
from fleetline.shared.fleet.debate import DebateRules, Stop, agreement, round_step_id, turn_text
from fleetline.shared.ledger import Scope, ScopeKind
from fleetline.shared.outage import through_outage
from fleetline.shared.pattern_messages import TurnMessage, send_turn, subtask_spec
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import JobSpec, JobStatus, OutcomeStatus
from fleetline.workers.run import SubtaskRun, closing_guards
from fleetline.workers.runtime import WorkerRuntime, get_runtime
from fleetline.workers.task import drive_closing, retry_after_outage, start_run

log = logging.getLogger(__name__)

# How long a round's reservation may outlive a worker that died before releasing it.
ROUND_HOLD_S = 60.0


def run_turn(task: Task, raw: dict[str, Any]) -> dict[str, Any]:
    """Body of the debate turn task."""
    message = TurnMessage.model_validate(raw)
    try:
        return _turn(task, message, get_runtime())
    except RedisError as exc:
        raise retry_after_outage(task, f"a turn of {message.job_id}", exc) from exc


def run_judge(task: Task, raw: dict[str, Any]) -> dict[str, Any]:
    """Body of the debate judge task."""
    message = TurnMessage.model_validate(raw)
    try:
        return _judge(task, message, get_runtime())
    except RedisError as exc:
        raise retry_after_outage(task, f"the judge of {message.job_id}", exc) from exc


def _planned(
    runtime: WorkerRuntime, message: TurnMessage, read: TurnRead
) -> tuple[Plan, DebateRules]:
    plan = runtime.settings.fleet.plan(message.kind, JobSpec.model_validate_json(read.spec).input)
    assert plan.rules is not None and plan.then is not None, "a debate plan has rules and a judge"
    return plan, plan.rules


def _step_run(
    task: Task, message: TurnMessage, runtime: WorkerRuntime, step: Step, step_id: str, text: str
) -> SubtaskRun:
    subtask = subtask_spec(step, runtime.settings, step_id=step_id, text=text)
    run = start_run(task, message.payload(subtask), step.worker)
    if message.agent is None:
        # The judge closes the job, like a fan-out's then-step: its turn has come.
        run.guards = closing_guards(step.worker)
    return run


def _turn(task: Task, message: TurnMessage, runtime: WorkerRuntime) -> dict[str, Any]:
    read = runtime.debates.read(message.job_id, message.round)
    if (
        not read.exists
        or read.status != JobStatus.RUNNING.value
        or read.round != message.round
        or read.judging
        or message.agent is None
    ):
        return {"job_id": message.job_id, "ran": False}
    plan, rules = _planned(runtime, message, read)
    step = plan.steps[message.agent]
    step_id = round_step_id(step.id, message.round)
    run = _step_run(task, message, runtime, step, step_id, turn_text(step, read.pattern["history"]))
    if read.closed:
        # Its round closed with its quorum before it started: recorded, never called.
        outcome = run.outcome(OutcomeStatus.SKIPPED, "quorum", "its round closed without it")
    else:
        outcome = drive_closing(task, run)
    answered = outcome.status is OutcomeStatus.OK and outcome.output is not None
    actor = task.request.hostname or ""

    def count(trip: RoundTrip) -> int:
        return runtime.debates.queue_turn(
            trip,
            message.job_id,
            message.round,
            message.agent or 0,
            answered,
            len(plan.steps),
            rules.quorum,
            actor,
        )

    grace = runtime.settings.redis.outage_grace_s
    _, reply = through_outage(lambda: run.finish(outcome, also=count), grace, "counting a turn")
    if runtime.debates.closes(reply):
        _close_round(task, message, plan, rules, read, runtime, actor)
    return {"job_id": message.job_id, "ran": True}


def _close_round(
    task: Task,
    message: TurnMessage,
    plan: Plan,
    rules: DebateRules,
    read: TurnRead,
    runtime: WorkerRuntime,
    actor: str,
) -> None:
    """Check the closed round for consensus and send the next round, or the judge."""
    round_no = message.round
    outcomes = runtime.store.outcomes(message.job_id)
    answers: dict[str, dict[str, Any]] = {}
    for index in runtime.debates.answered(message.job_id, round_no):
        step = plan.steps[index]
        found = outcomes.get(round_step_id(step.id, round_no))
        if found is not None and found.output is not None:
            answers[step.id] = found.output
    agreed = agreement(list(answers.values()), rules.agree)
    history = [*read.pattern["history"], answers]
    stop = rules.stop(round_no, agreed, len(answers))
    hold = None
    if stop is None:
        hold = _reserve_round(runtime, message, plan, history, round_no + 1)
        if hold is None:
            stop = Stop.BUDGET
    pattern = {
        "rounds": round_no,
        "history": history,
        "agreement": [*read.pattern["agreement"], agreed],
        "consensus": rules.consensus(agreed),
        "stopped_early": stop is Stop.CONSENSUS and round_no < rules.max_rounds,
        "stop": stop.value if stop is not None else None,
    }
    turns = [round_step_id(s.id, r) for r in range(1, round_no + 1) for s in plan.steps]
    judge = plan.then
    assert judge is not None
    if stop is None:
        following = [round_step_id(s.id, round_no + 1) for s in plan.steps]
        moved = runtime.debates.advance(
            message.job_id,
            round_no,
            round_no + 1,
            pattern,
            [*turns, *following],
            agreed,
            None,
            actor,
        )
        if moved >= 0:
            next_message = message.model_copy(update={"round": round_no + 1})
            for index, step in enumerate(plan.steps):
                if moved == 1 or following[index] not in outcomes:
                    send_turn(
                        task.app,
                        runtime.settings,
                        next_message.model_copy(update={"agent": index}),
                        step,
                        following[index],
                    )
        if hold is not None:
            runtime.ledger.release(hold)
        return
    moved = runtime.debates.advance(
        message.job_id, round_no, None, pattern, [*turns, judge.id], agreed, stop.value, actor
    )
    if moved == 1 or (moved == 0 and judge.id not in outcomes):
        judging = message.model_copy(update={"agent": None})
        send_turn(task.app, runtime.settings, judging, judge, judge.id)


def _reserve_round(
    runtime: WorkerRuntime, message: TurnMessage, plan: Plan, history: list[Any], round_no: int
) -> str | None:
    """Hold the next round's worst case (and its judge's) against the job's budget while it
    is sent; None when it does not fit."""
    usd, tokens = round_bound(runtime.settings, plan, history)
    scope = Scope(
        ScopeKind.JOB,
        message.job_id,
        budget_usd=message.budget_usd,
        budget_tokens=message.budget_tokens,
    )
    call_id = f"{message.job_id}:round:{round_no}"
    held = runtime.ledger.reserve(call_id, usd, tokens, [scope], hold_s=ROUND_HOLD_S)
    if held.ok:
        return call_id
    log.info(
        "job %s cannot afford round %d (%s): to the judge", message.job_id, round_no, held.refusal
    )
    return None


def _judge(task: Task, message: TurnMessage, runtime: WorkerRuntime) -> dict[str, Any]:
    read = runtime.debates.read(message.job_id, message.round)
    if not read.exists or read.status != JobStatus.RUNNING.value or not read.judging:
        return {"job_id": message.job_id, "ran": False}
    plan, rules = _planned(runtime, message, read)
    judge = plan.then
    assert judge is not None
    history = read.pattern["history"]
    answered = sum(len(r) for r in history)
    store = runtime.store
    actor = task.request.hostname or ""
    grace = runtime.settings.redis.outage_grace_s
    if not answered:
        # Nothing to judge: no agent ever answered. The judge is not asked.
        def fail() -> bool:
            return store.finalize(
                message.job_id, JobStatus.FAILED, 0.0, {"answer": None}, actor, "no answers"
            )

        return {"job_id": message.job_id, "finalised": through_outage(fail, grace, "ending")}
    run = _step_run(task, message, runtime, judge, judge.id, turn_text(judge, history))
    outcome = drive_closing(task, run)
    expected = max(1, len(history) * rules.quorum)
    full = answered >= expected and read.pattern.get("stop") not in (Stop.BUDGET, Stop.NO_ANSWERS)
    if outcome.status is OutcomeStatus.OK and outcome.output is not None:
        status = JobStatus.SUCCEEDED if full else JobStatus.DEGRADED
    else:
        # What the agents said is still worth having without the judge's answer.
        status = JobStatus.DEGRADED
    completeness = round(min(1.0, answered / expected), 4)
    result = {"answer": outcome.output if outcome.status is OutcomeStatus.OK else None}

    def finalize(trip: RoundTrip) -> int:
        return store.queue_finalize(
            trip, message.job_id, status, completeness, result, actor, reason="judge"
        )

    _, reply = through_outage(lambda: run.finish(outcome, also=finalize), grace, "finalising")
    return {"job_id": message.job_id, "finalised": store.finalized(reply)}
