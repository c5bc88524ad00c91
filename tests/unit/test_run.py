"""One subtask run: deadline guard, the model call through the gate, and what it charges;
and a tool step's run of its function.

The runtime is built by hand: `call()` needs only settings and a model client, and the
deadline guard queues no Redis work, so its empty batch never opens a connection (the
client below points at a socket that does not exist, so any Redis use would fail).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import BaseModel
from redis.backoff import NoBackoff
from redis.retry import Retry

from fleetline.examples import research
from fleetline.examples.research import AnalysisOutput, ExtractionOutput
from fleetline.shared.breakers import MemoryBreakers
from fleetline.shared.errors import (
    ConfigError,
    ModelAuthError,
    ModelBadRequest,
    ModelError,
    ModelTimeout,
    PermanentModelError,
    PermanentToolError,
    ProviderServerError,
    RateLimited,
    RetryableToolError,
    ToolTimeout,
)
from fleetline.shared.fleet import FleetDefinition
from fleetline.shared.models.base import ModelRequest, ModelResponse
from fleetline.shared.models.prices import call_cost_usd
from fleetline.shared.models.sim import SimClient
from fleetline.shared.schemas import (
    OutcomeStatus,
    StepKind,
    SubtaskOutcome,
    SubtaskPayload,
    SubtaskSpec,
)
from fleetline.shared.settings import FleetlineSettings, ModelSpec, RedisSettings, SimSettings
from fleetline.workers.guards import DeadlineGuard
from fleetline.workers.run import Attempt, SubtaskRun, default_guards, tool_guards
from fleetline.workers.runtime import WorkerRuntime
from fleetline.workers.spend import RunSpend, bound_of
from fleetline.workers.task import drive
from fleetline.workers.usage_spool import UsageSpool

QUESTION = "How did Acme's revenue change in 2023?"
DOCUMENT = "Acme Corp reported revenue of $4.2 million in 2023, up 12% on the year before."
# Runs here bill their calls: the write-ahead goes to a folder of the tests' own.
SPOOL = UsageSpool(tempfile.mkdtemp(prefix="fleetline-spool-"), "unit-tests")
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


class LocalSpend(RunSpend):
    """The run's holds kept in memory (no Redis here); `refuse_after` holds that many."""

    refuse_after: int | None = None

    def reserve(self, request: ModelRequest) -> str | None:
        if self.refuse_after is not None and len(self.held) >= self.refuse_after:
            return "job budget refused"
        self.held[request.call_id] = bound_of(self.run, request)
        return None


def _settings(**fields: Any) -> FleetlineSettings:
    # No outage grace: a Redis call here must fail the test at once, not ride it out.
    return FleetlineSettings(redis=RedisSettings(outage_grace_s=0), **fields).bind(research.fleet)


def _run(
    client: Any,
    settings: FleetlineSettings | None = None,
    worker_type: str = "extraction",
    deadline_in_s: float = 60.0,
    attempt: int = 1,
    text: str = DOCUMENT,
    redis_client: redis.Redis | None = None,
) -> SubtaskRun:
    settings = settings or _settings()
    policy = settings.worker(worker_type)
    runtime = WorkerRuntime(settings=settings, redis=redis_client, store=None)  # type: ignore[arg-type]
    runtime.spool = SPOOL
    for model in settings.model_chain(worker_type):
        runtime._clients[model] = client
    payload = SubtaskPayload(
        job_id="job1",
        tenant="acme",
        deadline_at=time.time() + deadline_in_s,
        subtask=SubtaskSpec(
            id=f"{worker_type}-doc1",
            worker_type=worker_type,
            tier=policy.tier,
            instruction=QUESTION,
            text=text,
            max_output_tokens=policy.max_output_tokens,
        ),
    )
    run = SubtaskRun(
        payload=payload,
        worker=settings.fleet.agents[worker_type],
        runtime=runtime,
        attempt=Attempt(number=attempt, started_at=time.time()),
        guards=[DeadlineGuard()],
    )
    run.spend = LocalSpend(run)
    return run


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
    model = run.runtime.settings.tiers["cheap"][0]
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
    assert outcome.worker_type == "extraction"


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
    run = _run(first, settings, "analysis")
    run.runtime._clients["sim-large"] = second
    outcome = run.call()
    assert outcome.model == "claude-sonnet"
    assert [r.model for r in first.requests] == ["claude-sonnet"]
    assert first.requests[0].api_model == settings.models["claude-sonnet"].api_model
    assert second.requests == []


def test_the_request_is_the_agents_prompt_over_the_subtask() -> None:
    client = FakeClient(json.dumps({"findings": ["up"], "relevance": 0.5}))
    run = _run(client, worker_type="analysis", attempt=3)
    run.call()
    [request] = client.requests
    subtask = run.payload.subtask
    assert run.agent is research.analysis
    assert request.worker_type == "analysis"
    assert request.instruction == research.analysis.instruction(QUESTION)
    assert QUESTION in request.instruction
    assert "{goal}" not in request.instruction
    assert request.instruction.endswith("\nSchema: " + research.analysis.schema_hint)
    assert request.output_schema == AnalysisOutput.model_json_schema()
    assert request.document == subtask.text
    assert request.max_output_tokens == subtask.max_output_tokens
    # The ledger's id of this delivery's first call on this model: the provider bills it.
    assert request.call_id == f"{run.payload.job_id}:{subtask.id}:3:{run.model}"
    assert request.attempt == 3
    assert request.correction is None


@pytest.mark.parametrize("own_answers", [True, False], ids=["own-answer", "schema-filled"])
@pytest.mark.parametrize("worker_type", ["extraction", "classification", "analysis", "synthesis"])
def test_a_sim_answer_passes_the_gate(worker_type: str, own_answers: bool) -> None:
    answers = {n: a.sim for n, a in research.fleet.agents.items() if a.sim} if own_answers else {}
    run = _run(SimClient(SimSettings(seed=3), answers), worker_type=worker_type)
    outcome = run.call()
    assert outcome.status is OutcomeStatus.OK
    assert outcome.output is not None
    research.fleet.agents[worker_type].output.model_validate(outcome.output)
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
    ceiling = run.runtime.settings.worker("extraction").max_call_s
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
    calls = run.runtime.settings.worker("extraction").correction_attempts + 1
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


def test_every_call_is_billed_under_its_own_reserved_call_id() -> None:
    bad = json.dumps({"entities": [], "figures": []})
    run = _run(FakeClient(bad, bad, VALID_EXTRACTION, tokens_in=100, tokens_out=50))
    run.spend.held[run.call_id()] = bound_of(run, run.request())  # the budget guard's hold
    outcome = run.call()
    first = run.call_id()
    assert outcome.status is OutcomeStatus.OK
    assert list(run.spend.held) == [first, f"{first}:c1", f"{first}:c2"]
    assert list(run.spend.billed) == list(run.spend.held)
    assert sum(b.cost_usd for b in run.spend.billed.values()) == pytest.approx(outcome.cost_usd)
    for call_id, billed in run.spend.billed.items():
        assert billed.cost_usd <= run.spend.held[call_id].usd, "each call within its own hold"


def test_a_correction_that_does_not_fit_is_not_made() -> None:
    client = FakeClient("not json", VALID_EXTRACTION)
    run = _run(client)
    run.spend.held[run.call_id()] = bound_of(run, run.request())
    assert isinstance(run.spend, LocalSpend)
    run.spend.refuse_after = 1
    outcome = run.call()
    assert outcome.status is OutcomeStatus.INVALID_OUTPUT and outcome.error is not None
    assert "no further call: job budget refused" in outcome.error.message
    assert len(client.requests) == 1, "the re-ask was never sent"
    assert list(run.spend.billed) == [run.call_id()], "the first call is still charged"


def test_a_correction_that_raises_keeps_the_first_calls_bill() -> None:
    client = FakeClient("not json", ProviderServerError("boom"), tokens_in=100, tokens_out=50)
    run = _run(client)
    run.spend.held[run.call_id()] = bound_of(run, run.request())
    with pytest.raises(ProviderServerError):
        run.call()
    assert run.spend.billed[run.call_id()].tokens_in == 100
    assert f"{run.call_id()}:c1" in run.spend.held and f"{run.call_id()}:c1" not in (
        run.spend.billed
    )


def test_the_input_bound_holds_for_one_token_per_character() -> None:
    # CJK text is about a token a character; every such character is 3 UTF-8 bytes.
    text = "半导体出口管制" * 3000
    run = _run(FakeClient(VALID_EXTRACTION), text=text)
    bound = bound_of(run, run.request())
    assert bound.tokens - run.request().max_output_tokens >= len(text)


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

    outcome = _run(Recording(), worker_type="analysis").call()
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


# --- guards by worker kind ---------------------------------------------------------------


def test_an_agent_runs_every_guard_and_a_tool_only_recorded_cancelled_deadline_and_crash() -> None:
    assert [type(g).__name__ for g in default_guards()] == [
        "RecordedGuard",
        "CancelledGuard",
        "DeadlineGuard",
        "FairShareGuard",
        "CrashGuard",
        "KillSwitchGuard",
        "BreakerGuard",
        "BudgetGuard",
        "CacheGuard",
    ]
    assert [type(g).__name__ for g in tool_guards()] == [
        "RecordedGuard",
        "CancelledGuard",
        "DeadlineGuard",
        "FairShareGuard",
        "CrashGuard",
    ]
    # Fresh guards every time: they hold per-run state.
    assert default_guards()[0] is not default_guards()[0]


def test_a_run_starts_on_the_first_model_of_its_agents_chain() -> None:
    settings = _settings()
    run = SubtaskRun(
        payload=_run(FakeClient(VALID_EXTRACTION), settings, "analysis").payload,
        worker=research.analysis,
        runtime=WorkerRuntime(settings=settings, redis=None, store=None),  # type: ignore[arg-type]
        attempt=Attempt(number=1, started_at=time.time()),
    )
    assert run.model == settings.model_chain("analysis")[0]
    assert [type(g) for g in run.guards] == [type(g) for g in default_guards()]


# --- tools -------------------------------------------------------------------------------


class Quote(BaseModel):
    price: float


tools = FleetDefinition("tools")
release = threading.Event()


@tools.tool("quote", output=Quote, timeout_s=5.0)
def quote(args: dict[str, Any]) -> dict[str, Any]:
    return {"price": args["base"] * 2}


CALLS: list[dict[str, Any]] = []


@tools.tool("counted")
def counted(args: dict[str, Any]) -> dict[str, Any]:
    CALLS.append(args)
    return {"calls": len(CALLS)}


@tools.tool("flaky", retry_on=(ConnectionError,))
def flaky(args: dict[str, Any]) -> dict[str, Any]:
    raise ConnectionError("reset by peer")


@tools.tool("buggy")
def buggy(args: dict[str, Any]) -> dict[str, Any]:
    return {"price": args["missing"]}


@tools.tool("refuses")
def refuses(args: dict[str, Any]) -> dict[str, Any]:
    raise PermanentToolError("no such ticker")


@tools.tool("busy")
def busy(args: dict[str, Any]) -> dict[str, Any]:
    raise RetryableToolError("try again later")


@tools.tool("slow", timeout_s=0.05)
def slow(args: dict[str, Any]) -> dict[str, Any]:
    release.wait(5)
    return {}


@tools.tool("listing")
def listing(args: dict[str, Any]) -> dict[str, Any]:
    return [1, 2]  # type: ignore[return-value]


@tools.tool("opaque")
def opaque(args: dict[str, Any]) -> dict[str, Any]:
    return {"value": object()}


@tools.tool("wrong", output=Quote)
def wrong(args: dict[str, Any]) -> dict[str, Any]:
    return {"price": "a lot"}


@pytest.fixture
def slow_tool() -> Iterator[None]:
    release.clear()
    yield
    release.set()  # the abandoned thread ends with the test


def _tool_run(
    name: str,
    args: dict[str, Any] | None = None,
    attempt: int = 1,
    deadline_in_s: float = 60.0,
    redis_client: redis.Redis | None = None,
    breakers: MemoryBreakers | None = None,
) -> SubtaskRun:
    settings = FleetlineSettings(redis=RedisSettings(outage_grace_s=0)).bind(tools)
    runtime = WorkerRuntime(settings=settings, redis=redis_client, store=None)  # type: ignore[arg-type]
    runtime.spool = SPOOL
    # The tools' fleet-wide breakers, in memory.
    runtime.tool_breaker_store = breakers or MemoryBreakers()  # type: ignore[assignment]
    payload = SubtaskPayload(
        job_id="job1",
        tenant="acme",
        deadline_at=time.time() + deadline_in_s,
        subtask=SubtaskSpec(
            id=f"{name}-1", worker_type=name, kind=StepKind.TOOL, args=args or {"base": 2}
        ),
    )
    return SubtaskRun(
        payload=payload,
        worker=tools.tools[name],
        runtime=runtime,
        attempt=Attempt(number=attempt, started_at=time.time()),
        guards=[DeadlineGuard()],
    )


def test_a_tool_step_runs_the_function_on_its_arguments() -> None:
    run = _tool_run("quote", {"base": 21})
    outcome = run.call()
    assert outcome.status is OutcomeStatus.OK
    assert outcome.output == {"price": 42}
    assert (outcome.worker_type, outcome.subtask_id) == ("quote", "quote-1")
    # No model, no tokens, no money.
    assert (outcome.model, outcome.tokens_in, outcome.cost_usd) == (None, 0, 0.0)
    assert run.model == ""


def test_a_tool_is_not_an_agent() -> None:
    with pytest.raises(ConfigError, match="quote is a tool"):
        _tool_run("quote").agent  # noqa: B018


def test_a_tools_retry_on_error_is_retryable() -> None:
    with pytest.raises(RetryableToolError, match="ConnectionError: reset by peer"):
        _tool_run("flaky").call()
    with pytest.raises(RetryableToolError, match="try again later"):
        _tool_run("busy").call()


@pytest.mark.parametrize(
    ("name", "message"), [("buggy", "KeyError: 'missing'"), ("refuses", "no such ticker")]
)
def test_any_other_tool_error_fails_the_step_at_once(name: str, message: str) -> None:
    outcome = _tool_run(name).call()
    assert outcome.status is OutcomeStatus.FAILED
    assert outcome.error is not None
    assert outcome.error.category == "tool_error"
    assert message in outcome.error.message


def test_a_tool_past_its_timeout_is_a_tool_timeout(slow_tool: None) -> None:
    started = time.monotonic()
    with pytest.raises(ToolTimeout, match="slow"):
        _tool_run("slow").call()
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(
    ("name", "problem"),
    [("listing", "returned list, not a dict"), ("opaque", "not JSON"), ("wrong", "price:")],
)
def test_a_result_that_cannot_be_an_output_is_invalid(name: str, problem: str) -> None:
    outcome = _tool_run(name).call()
    assert outcome.status is OutcomeStatus.INVALID_OUTPUT
    assert outcome.output is None
    assert outcome.error is not None
    assert problem in outcome.error.message


def test_drive_retries_a_retryable_tool_error(no_redis: redis.Redis) -> None:
    task = FakeTask()
    with pytest.raises(RetryRequested):
        drive(task, _tool_run("flaky", redis_client=no_redis))  # type: ignore[arg-type]
    # The default policy's backoff: 0.5 s at most on the first attempt.
    assert len(task.countdowns) == 1
    assert 0.25 <= task.countdowns[0] <= 0.5


def test_drive_ends_a_tool_timeout_timed_out_when_retries_are_spent(
    no_redis: redis.Redis, slow_tool: None
) -> None:
    task = FakeTask()
    outcome = drive(task, _tool_run("slow", attempt=4, redis_client=no_redis))  # type: ignore[arg-type]
    assert task.countdowns == []
    assert outcome.status is OutcomeStatus.TIMED_OUT
    assert outcome.error is not None
    assert outcome.error.category == "timeout"


def test_an_open_tool_breaker_refuses_the_step_without_calling_the_tool() -> None:
    CALLS.clear()
    breakers = MemoryBreakers()
    assert _tool_run("counted", breakers=breakers).call().output == {"calls": 1}
    for _ in range(breakers.settings.min_calls):
        breakers.record_failure("counted:tool")
    outcome = _tool_run("counted", breakers=breakers).call()
    assert outcome.status is OutcomeStatus.CIRCUIT_OPEN
    assert outcome.error is not None
    assert outcome.error.category == "circuit_open"
    assert len(CALLS) == 1


def test_a_tools_own_refusals_never_open_its_breaker() -> None:
    breakers = MemoryBreakers()
    for _ in range(2 * breakers.settings.min_calls):
        assert _tool_run("refuses", breakers=breakers).call().status is OutcomeStatus.FAILED
    assert _tool_run("quote", breakers=breakers).call().status is OutcomeStatus.OK
    for _ in range(breakers.settings.min_calls):
        with contextlib.suppress(RetryableToolError):
            _tool_run("flaky", breakers=breakers).call()
    assert _tool_run("flaky", breakers=breakers).call().status is OutcomeStatus.CIRCUIT_OPEN
