"""One subtask run: deadline guard, the model call through the gate, and what it charges.

The runtime is built by hand: `call()` needs only settings and a model client, and the
deadline guard queues no Redis work, so its empty batch never opens a connection (the
client below points at a socket that does not exist, so any Redis use would fail).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from fleetline.shared.errors import (
    ModelAuthError,
    ModelBadRequest,
    ModelError,
    ModelTimeout,
    PermanentModelError,
    ProviderServerError,
    RateLimited,
)
from fleetline.shared.models.base import ModelRequest, ModelResponse
from fleetline.shared.models.prices import call_cost_usd
from fleetline.shared.models.sim import SimClient
from fleetline.shared.names import Tier, WorkerType
from fleetline.shared.outputs import AnalysisOutput, ExtractionOutput
from fleetline.shared.schemas import OutcomeStatus, SubtaskOutcome, SubtaskPayload, SubtaskSpec
from fleetline.shared.settings import FleetlineSettings, ModelSpec, RedisSettings, SimSettings
from fleetline.workers.guards import DeadlineGuard
from fleetline.workers.pipeline import Attempt, SubtaskRun
from fleetline.workers.registry import SPECIALISTS
from fleetline.workers.runtime import WorkerRuntime
from fleetline.workers.task import drive

QUESTION = "How did Acme's revenue change in 2023?"
DOCUMENT = "Acme Corp reported revenue of $4.2 million in 2023, up 12% on the year before."
VALID_EXTRACTION = json.dumps({"entities": ["Acme Corp"], "figures": ["12%"], "gist": "Acme grew."})

Reply = str | Exception


class FakeClient:
    """A ModelClient that records every request and answers from a script."""

    def __init__(self, *replies: Reply, tokens_in: int = 1000, tokens_out: int = 200) -> None:
        self.replies = list(replies)
        self.requests: list[ModelRequest] = []
        self.tokens_in = tokens_in
        self.tokens_out = tokens_out

    def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return ModelResponse(
            text=reply,
            model=request.model,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            latency_ms=1.0,
        )


class RetryRequested(Exception):
    """Stands in for celery.exceptions.Retry."""


class FakeTask:
    """The part of a Celery task `drive` uses: scheduling a retry."""

    def __init__(self) -> None:
        self.countdowns: list[float] = []

    def retry(self, countdown: float, max_retries: int) -> RetryRequested:
        self.countdowns.append(countdown)
        return RetryRequested()


def _settings(**fields: Any) -> FleetlineSettings:
    # No outage grace: a Redis call here must fail the test at once, not ride it out.
    return FleetlineSettings(redis=RedisSettings(outage_grace_s=0), **fields)


def _run(
    client: Any,
    settings: FleetlineSettings | None = None,
    worker_type: WorkerType = WorkerType.EXTRACTION,
    deadline_in_s: float = 60.0,
    attempt: int = 1,
    text: str = DOCUMENT,
    redis_client: redis.Redis | None = None,
) -> SubtaskRun:
    settings = settings or _settings()
    policy = settings.worker(worker_type)
    runtime = WorkerRuntime(settings=settings, redis=redis_client, store=None)  # type: ignore[arg-type]
    for model in settings.model_chain(worker_type):
        runtime._clients[model] = client
    payload = SubtaskPayload(
        job_id="job1",
        tenant="acme",
        deadline_at=time.time() + deadline_in_s,
        subtask=SubtaskSpec(
            id=f"{worker_type.value}-doc1",
            worker_type=worker_type,
            tier=policy.tier,
            instruction=QUESTION,
            text=text,
            max_output_tokens=policy.max_output_tokens,
        ),
    )
    return SubtaskRun(
        payload=payload,
        specialist=SPECIALISTS[worker_type],
        runtime=runtime,
        attempt=Attempt(number=attempt, started_at=time.time()),
        guards=[DeadlineGuard()],
    )


@pytest.fixture
def no_redis(tmp_path: Path) -> redis.Redis:
    """A client whose every connection attempt fails: nothing here may need Redis."""
    return redis.Redis(
        unix_socket_path=str(tmp_path / "no-redis.sock"), retry=Retry(NoBackoff(), 0)
    )


# --- deadline ----------------------------------------------------------------------------


def test_subtask_past_its_deadline_is_skipped_without_a_model_call(
    no_redis: redis.Redis,
) -> None:
    client = FakeClient(VALID_EXTRACTION)
    run = _run(client, deadline_in_s=-1.0, attempt=2, redis_client=no_redis)
    outcome = drive(FakeTask(), run)  # type: ignore[arg-type]
    assert outcome.status is OutcomeStatus.SKIPPED
    assert outcome.error is not None
    assert outcome.error.category == "deadline"
    assert (outcome.tokens_in, outcome.tokens_out, outcome.cost_usd) == (0, 0, 0.0)
    assert outcome.attempts == 2
    assert outcome.subtask_id == run.payload.subtask.id
    assert client.requests == []


def test_subtask_within_its_deadline_is_run(no_redis: redis.Redis) -> None:
    client = FakeClient(VALID_EXTRACTION)
    outcome = drive(FakeTask(), _run(client, redis_client=no_redis))  # type: ignore[arg-type]
    assert outcome.status is OutcomeStatus.OK
    assert len(client.requests) == 1


# --- the call ----------------------------------------------------------------------------


def test_ok_outcome_carries_validated_output_tokens_and_cost() -> None:
    answer = {"entities": ["Acme Corp"], "figures": ["12%"], "gist": "Acme grew.", "chat": "hi"}
    client = FakeClient(json.dumps(answer), tokens_in=1000, tokens_out=200)
    run = _run(client)
    outcome = run.call()
    model = run.runtime.settings.tiers[Tier.CHEAP][0]
    assert outcome.status is OutcomeStatus.OK
    assert outcome.error is None
    assert outcome.model == model
    assert (outcome.tokens_in, outcome.tokens_out) == (1000, 200)
    assert outcome.cost_usd == pytest.approx(
        call_cost_usd(run.runtime.settings.models[model], 1000, 200)
    )
    # The output is what the schema validated: fields it does not know are dropped.
    assert outcome.output == ExtractionOutput.model_validate(answer).model_dump(mode="json")
    assert outcome.output is not None
    assert "chat" not in outcome.output
    assert outcome.subtask_id == run.payload.subtask.id
    assert outcome.worker_type is WorkerType.EXTRACTION


def test_cost_follows_the_price_table_in_settings() -> None:
    settings = _settings(
        models={
            "priced": ModelSpec(provider="sim", input_usd_per_mtok=2.0, output_usd_per_mtok=8.0)
        },
        tiers={"cheap": ["priced"]},
    )
    outcome = _run(FakeClient(VALID_EXTRACTION, tokens_in=1000, tokens_out=200), settings).call()
    assert outcome.model == "priced"
    # 1000 input tokens at $2/M plus 200 output tokens at $8/M.
    assert outcome.cost_usd == pytest.approx(0.002 + 0.0016)


def test_the_call_goes_to_the_first_model_of_the_tier() -> None:
    settings = _settings(tiers={"reasoning": ["claude-sonnet", "sim-large"]})
    first, second = FakeClient(json.dumps({"findings": ["up"], "relevance": 1})), FakeClient("x")
    run = _run(first, settings, WorkerType.ANALYSIS)
    run.runtime._clients["sim-large"] = second
    outcome = run.call()
    assert outcome.model == "claude-sonnet"
    assert [r.model for r in first.requests] == ["claude-sonnet"]
    assert first.requests[0].api_model == settings.models["claude-sonnet"].api_model
    assert second.requests == []


def test_the_request_is_the_specialists_prompt_over_the_subtask() -> None:
    client = FakeClient(json.dumps({"findings": ["up"], "relevance": 0.5}))
    run = _run(client, worker_type=WorkerType.ANALYSIS, attempt=3)
    run.call()
    [request] = client.requests
    subtask = run.payload.subtask
    assert request.worker_type is WorkerType.ANALYSIS
    assert request.instruction == SPECIALISTS[WorkerType.ANALYSIS].instruction(QUESTION)
    assert QUESTION in request.instruction
    assert request.document == subtask.text
    assert request.max_output_tokens == subtask.max_output_tokens
    assert request.call_id == subtask.id
    assert request.attempt == 3
    assert request.correction is None


@pytest.mark.parametrize("worker_type", [WorkerType.EXTRACTION, WorkerType.ANALYSIS])
def test_a_sim_answer_passes_the_gate(worker_type: WorkerType) -> None:
    run = _run(SimClient(SimSettings(seed=3)), worker_type=worker_type)
    outcome = run.call()
    assert outcome.status is OutcomeStatus.OK
    assert outcome.output is not None
    SPECIALISTS[worker_type].output_schema.model_validate(outcome.output)
    assert outcome.tokens_in > 0
    assert outcome.tokens_out > 0
    price = run.runtime.settings.models[run.model]
    assert outcome.cost_usd == pytest.approx(
        call_cost_usd(price, outcome.tokens_in, outcome.tokens_out)
    )


# --- call timeout ------------------------------------------------------------------------


def test_call_timeout_is_the_agents_ceiling_when_the_deadline_is_far() -> None:
    client = FakeClient(VALID_EXTRACTION)
    run = _run(client, deadline_in_s=3600)
    run.call()
    ceiling = run.runtime.settings.worker(WorkerType.EXTRACTION).max_call_s
    assert client.requests[0].timeout_s == ceiling


def test_call_timeout_is_what_is_left_of_the_deadline_when_that_is_shorter() -> None:
    settings = _settings(workers={"extraction": {"max_call_s": 30}})
    client = FakeClient(VALID_EXTRACTION)
    _run(client, settings, deadline_in_s=5.0).call()
    assert 0 < client.requests[0].timeout_s <= 5.0
    assert client.requests[0].timeout_s > 4.0


def test_call_timeout_follows_the_configured_ceiling() -> None:
    settings = _settings(workers={"extraction": {"max_call_s": 2.5}})
    client = FakeClient(VALID_EXTRACTION)
    _run(client, settings, deadline_in_s=60).call()
    assert client.requests[0].timeout_s == 2.5


def test_call_timeout_stays_positive_past_the_deadline() -> None:
    run = _run(FakeClient(VALID_EXTRACTION), deadline_in_s=-10)
    assert 0 < run.call_timeout_s() < 0.01


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        RateLimited("429", retry_after_s=1.0),
        ProviderServerError("503"),
        ModelTimeout("slow"),
    ],
)
def test_a_retryable_error_propagates_from_the_call(error: ModelError) -> None:
    run = _run(FakeClient(error))
    with pytest.raises(type(error)):
        run.call()


@pytest.mark.parametrize(
    ("error", "category"),
    [(ModelAuthError("401 bad key"), "auth"), (ModelBadRequest("400 too long"), "bad_request")],
)
def test_a_permanent_error_becomes_a_failed_outcome_with_its_category(
    error: PermanentModelError, category: str
) -> None:
    run = _run(FakeClient(error))
    with pytest.raises(PermanentModelError) as info:
        run.call()
    outcome = run.failure(info.value)
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.category == category
    assert str(error) in outcome.error.message
    assert outcome.model == run.model


def test_drive_records_a_permanent_error_under_its_category(no_redis: redis.Redis) -> None:
    client = FakeClient(ModelAuthError("401 bad key"))
    outcome = drive(FakeTask(), _run(client, redis_client=no_redis))  # type: ignore[arg-type]
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.category == "auth"
    assert len(client.requests) == 1


def test_drive_schedules_a_retry_after_the_providers_retry_after(no_redis: redis.Redis) -> None:
    task = FakeTask()
    client = FakeClient(RateLimited("429", retry_after_s=1.5))
    with pytest.raises(RetryRequested):
        drive(task, _run(client, redis_client=no_redis))  # type: ignore[arg-type]
    assert task.countdowns == [1.5]


@pytest.mark.parametrize(
    ("error", "status", "category"),
    [
        (RateLimited("429", retry_after_s=0.1), OutcomeStatus.FAILED, "rate_limited"),
        (ProviderServerError("503"), OutcomeStatus.FAILED, "server_error"),
        (ModelTimeout("slow"), OutcomeStatus.TIMED_OUT, "timeout"),
    ],
)
def test_drive_gives_up_when_retries_are_spent(
    no_redis: redis.Redis, error: ModelError, status: OutcomeStatus, category: str
) -> None:
    settings = _settings(workers={"extraction": {"max_retries": 2}})
    task = FakeTask()
    run = _run(FakeClient(error), settings, attempt=3, redis_client=no_redis)
    outcome = drive(task, run)  # type: ignore[arg-type]
    assert task.countdowns == []
    assert (outcome.status, outcome.attempts) == (status, 3)
    assert outcome.error is not None
    assert outcome.error.category == category


def test_drive_does_not_retry_past_the_deadline(no_redis: redis.Redis) -> None:
    task = FakeTask()
    client = FakeClient(RateLimited("429", retry_after_s=20.0))
    outcome = drive(task, _run(client, deadline_in_s=5.0, redis_client=no_redis))  # type: ignore[arg-type]
    assert task.countdowns == []
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.category == "rate_limited"


# --- malformed output --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected_error"),
    [
        ("Sure! Acme grew.", "Invalid JSON"),
        (json.dumps({"entities": [], "figures": []}), "gist: Field required"),
        (json.dumps({"entities": "Acme", "figures": [], "gist": "g"}), "entities:"),
    ],
)
def test_malformed_output_is_invalid_and_still_charged(answer: str, expected_error: str) -> None:
    client = FakeClient(answer, tokens_in=300, tokens_out=40)
    run = _run(client)
    outcome = run.call()
    calls = run.runtime.settings.worker(WorkerType.EXTRACTION).correction_attempts + 1
    assert len(client.requests) == calls
    assert outcome.status is OutcomeStatus.INVALID_OUTPUT
    assert outcome.output is None
    assert outcome.error is not None
    assert outcome.error.category == "invalid_output"
    assert expected_error in outcome.error.message
    # Every call was billed by the provider, so every call is charged.
    assert (outcome.tokens_in, outcome.tokens_out) == (300 * calls, 40 * calls)
    price = run.runtime.settings.models[run.model]
    assert outcome.cost_usd == pytest.approx(call_cost_usd(price, 300 * calls, 40 * calls))
    assert outcome.cost_usd > 0


def test_a_correction_is_sent_with_the_validation_errors() -> None:
    client = FakeClient(json.dumps({"entities": [], "figures": []}), VALID_EXTRACTION)
    outcome = _run(client).call()
    assert outcome.status is OutcomeStatus.OK
    assert [r.correction is None for r in client.requests] == [True, False]
    assert "gist" in (client.requests[1].correction or "")
    # Both calls are charged: the one that failed validation was billed too.
    assert (outcome.tokens_in, outcome.tokens_out) == (2000, 400)


def test_no_corrections_means_one_call() -> None:
    settings = _settings(workers={"extraction": {"correction_attempts": 0}})
    client = FakeClient("not json", VALID_EXTRACTION)
    outcome = _run(client, settings).call()
    assert outcome.status is OutcomeStatus.INVALID_OUTPUT
    assert len(client.requests) == 1


def test_sim_malformed_answer_is_corrected_through_the_gate() -> None:
    calls: list[ModelRequest] = []
    sim = SimClient(SimSettings(malformed_rate=1.0))

    class Recording:
        def complete(self, request: ModelRequest) -> ModelResponse:
            calls.append(request)
            return sim.complete(request)

    outcome = _run(Recording(), worker_type=WorkerType.ANALYSIS).call()
    assert outcome.status is OutcomeStatus.OK
    assert outcome.output is not None
    AnalysisOutput.model_validate(outcome.output)
    assert len(calls) == 2
    assert calls[1].correction


def test_outcomes_survive_the_json_wire() -> None:
    run = _run(FakeClient("nope"))
    outcomes: list[Callable[[], SubtaskOutcome]] = [
        run.call,
        lambda: run.failure(ModelAuthError("401")),
    ]
    for make in outcomes:
        outcome = make()
        assert SubtaskOutcome.model_validate_json(outcome.model_dump_json()) == outcome
