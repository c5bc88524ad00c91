"""The public API: a team declares its agents, tools and job kinds; plans stay in the fleet;
settings bind to a fleet; apps load by `module:attribute`. No Redis, no model."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

import fleetline
from fleetline import Fleet, Plan, PlanError, fan_out
from fleetline.producer.submit import parse_spec
from fleetline.shared.errors import ConfigError, SpecError
from fleetline.shared.fleet import Agent, FleetDefinition, JobKind, Step, Tool, load_fleet
from fleetline.shared.schemas import StepKind
from fleetline.shared.settings import read_settings


class Sentiment(BaseModel):
    label: str = Field(min_length=1)
    score: float = Field(ge=0, le=1)


class Summary(BaseModel):
    summary: str


class Reviews(BaseModel):
    product: str = Field(min_length=1)
    reviews: list[str] = Field(min_length=1)


class Price(BaseModel):
    price: float


def make_fleet(name: str = "acme") -> Fleet:
    """A small fleet of the kind a team writes: two agents, a tool and a job kind."""
    fleet = Fleet(name)
    sentiment = fleet.agent(
        "sentiment",
        tier="cheap",
        output=Sentiment,
        prompt="Classify the sentiment of the review. {goal}",
        concurrency=64,
        max_retries=5,
    )
    summary = fleet.agent(
        "summary",
        tier="reasoning",
        output=Summary,
        prompt="Summarise: {goal}",
        fallback_tiers=["cheap"],
    )

    @fleet.tool("price_lookup", timeout_s=2.5, retry_on=(TimeoutError,), output=Price)
    def price_lookup(args: dict[str, Any]) -> dict[str, Any]:
        return {"price": 9.99 if args.get("product") == "kettle" else 0.0}

    @fleet.job("review_digest", input=Reviews)
    def review_digest(inp: Reviews) -> Plan:
        steps = [
            sentiment.step(id=f"review-{i}", text=text, goal=inp.product)
            for i, text in enumerate(inp.reviews)
        ]
        steps.append(price_lookup.step(id="price", args={"product": inp.product}))
        return fan_out(steps, then=summary.step(id="digest", goal=inp.product))

    return fleet


RAW = {"product": "kettle", "reviews": ["Boils fast, love it.", "Handle broke in a week."]}


# --- declaring ---------------------------------------------------------------------------


def test_declarations_are_registered_by_name() -> None:
    fleet = make_fleet()
    assert isinstance(fleet, FleetDefinition)
    assert sorted(fleet.agents) == ["sentiment", "summary"]
    assert list(fleet.tools) == ["price_lookup"]
    assert list(fleet.jobs) == ["review_digest"]
    assert sorted(fleet.worker_types) == ["price_lookup", "sentiment", "summary"]
    agent = fleet.agents["sentiment"]
    assert isinstance(agent, Agent)
    assert (agent.name, agent.fleet, agent.tier, agent.output) == (
        "sentiment",
        "acme",
        "cheap",
        Sentiment,
    )
    assert agent.policy == {"tier": "cheap", "concurrency": 64, "max_retries": 5}
    assert agent.sim is None
    tool = fleet.tools["price_lookup"]
    assert isinstance(tool, Tool)
    assert tool.policy == {"max_call_s": 2.5}
    assert (tool.retry_on, tool.output) == ((TimeoutError,), Price)
    job = fleet.jobs["review_digest"]
    assert isinstance(job, JobKind)
    assert (job.kind, job.input, job.combine, job.collect) == ("review_digest", Reviews, None, None)
    assert "acme" in repr(fleet) and "price_lookup" in repr(fleet)


def test_the_public_api_is_importable_from_the_root() -> None:
    for name in ("Fleet", "Plan", "PlanError", "Step", "fan_out", "ConfigError", "JobHandle"):
        assert name in fleetline.__all__
        assert hasattr(fleetline, name)


def test_the_instruction_is_the_prompt_with_the_goal_then_the_schema() -> None:
    agent = make_fleet().agents["sentiment"]
    instruction = agent.instruction("the kettle")
    prompt, schema = instruction.split("\nSchema: ")
    assert prompt == "Classify the sentiment of the review. the kettle"
    assert json.loads(schema) == {"label": "str", "score": "number"}
    assert agent.output_schema == Sentiment.model_json_schema()


def test_an_agents_own_sim_answer_is_kept() -> None:
    fleet = Fleet("simmed")

    def answer(instruction: str, document: str) -> dict[str, Any]:
        return {"label": "positive", "score": 1.0}

    agent = fleet.agent("mood", tier="cheap", output=Sentiment, prompt="Mood?", sim=answer)
    assert agent.sim is answer


def test_declaring_opens_no_connection() -> None:
    fleet = make_fleet()
    assert fleet._producer is None


@pytest.mark.parametrize("what", ["agent", "tool"])
@pytest.mark.parametrize("first", ["agent", "tool"])
def test_two_agents_or_tools_of_one_name_are_refused(first: str, what: str) -> None:
    fleet = Fleet("dupes")
    declare(fleet, first, "lookup")
    with pytest.raises(ConfigError, match=r"fleet dupes: two agents or tools named 'lookup'"):
        declare(fleet, what, "lookup")


def test_two_job_kinds_of_one_name_are_refused() -> None:
    fleet = make_fleet()
    with pytest.raises(ConfigError, match="two job kinds named 'review_digest'"):
        fleet.job("review_digest", input=Reviews)


def declare(fleet: Fleet, what: str, name: str, **policy: Any) -> Agent | Tool:
    if what == "agent":
        return fleet.agent(name, tier="cheap", output=Summary, prompt="p", **policy)
    return fleet.tool(name, **policy)(lambda args: {})


@pytest.mark.parametrize(
    "name", ["Lookup", "1lookup", "look-up", "look.up", "fleetline.fan_in", "", "x" * 49]
)
@pytest.mark.parametrize("what", ["agent", "tool"])
def test_bad_names_are_refused_naming_them(what: str, name: str) -> None:
    with pytest.raises(ConfigError) as info:
        declare(Fleet("names"), what, name)
    message = str(info.value)
    assert repr(name) in message
    assert f"{what} name" in message
    assert "^[a-z][a-z0-9_]{0,47}$" in message


def test_a_48_character_name_is_the_longest_allowed() -> None:
    assert declare(Fleet("names"), "agent", "x" * 48).name == "x" * 48


@pytest.mark.parametrize(
    ("declare_it", "what"),
    [
        (lambda f: Fleet("Bad Fleet"), "fleet name 'Bad Fleet'"),
        (lambda f: f.agent("a", tier="Cheap", output=Summary, prompt="p"), "tier name 'Cheap'"),
        (lambda f: f.job("Review-Digest", input=Reviews), "job kind name 'Review-Digest'"),
    ],
)
def test_bad_fleet_tier_and_kind_names_are_refused(declare_it: Any, what: str) -> None:
    with pytest.raises(ConfigError, match=what):
        declare_it(Fleet("names"))


@pytest.mark.parametrize("what", ["agent", "tool"])
def test_unknown_policy_fields_are_refused_naming_them(what: str) -> None:
    with pytest.raises(ConfigError) as info:
        declare(Fleet("policies"), what, "worker", concurency=4, retries=2)
    message = str(info.value)
    assert message.startswith("worker: unknown policy field(s) concurency, retries")
    assert "concurrency" in message  # among the known fields


def test_invalid_policy_values_are_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"worker: invalid policy: concurrency: .*greater"):
        declare(Fleet("policies"), "agent", "worker", concurrency=0)
    with pytest.raises(ConfigError, match="soft_time_limit_s must be below time_limit_s"):
        declare(Fleet("policies"), "tool", "worker", soft_time_limit_s=80)


def test_an_agents_output_must_be_a_pydantic_model() -> None:
    with pytest.raises(ConfigError, match="agent 'loose': output must be a pydantic model"):
        Fleet("models").agent("loose", tier="cheap", output=dict, prompt="p")  # type: ignore[arg-type]


def test_a_refused_declaration_registers_nothing() -> None:
    fleet = Fleet("atomic")
    with pytest.raises(ConfigError):
        declare(fleet, "agent", "worker", concurency=4)
    assert fleet.worker_types == {}
    declare(fleet, "agent", "worker")
    assert list(fleet.agents) == ["worker"]


# --- plain Python ------------------------------------------------------------------------


def test_a_tool_is_callable_as_plain_python() -> None:
    price_lookup = make_fleet().tools["price_lookup"]
    assert price_lookup({"product": "kettle"}) == {"price": 9.99}
    assert price_lookup.fn({"product": "toaster"}) == {"price": 0.0}


def test_a_job_kind_is_callable_as_plain_python() -> None:
    fleet = make_fleet()
    plan = fleet.jobs["review_digest"](Reviews.model_validate(RAW))
    assert isinstance(plan, Plan)
    assert [s.id for s in plan.steps] == ["review-0", "review-1", "price"]
    assert plan.then is not None
    assert plan.then.id == "digest"
    # The same as the decomposer the decorator wrapped.
    assert fleet.jobs["review_digest"].decompose(Reviews.model_validate(RAW)) == plan


def test_steps_carry_their_worker_goal_text_and_args() -> None:
    fleet = make_fleet()
    agent_step = fleet.agents["sentiment"].step(id="r", text="Nice.", goal="g", critical=True)
    assert isinstance(agent_step, Step)
    assert (agent_step.worker_type, agent_step.text, agent_step.goal) == ("sentiment", "Nice.", "g")
    assert agent_step.critical
    args = {"product": "kettle"}
    tool_step = fleet.tools["price_lookup"].step(id="p", args=args)
    assert (tool_step.worker_type, tool_step.args, tool_step.critical) == (
        "price_lookup",
        args,
        False,
    )
    args["product"] = "changed"
    assert tool_step.args == {"product": "kettle"}, "a step keeps a copy of its arguments"
    assert fleet.tools["price_lookup"].step(id="q").args == {}


# --- plans -------------------------------------------------------------------------------


def test_fan_out_needs_at_least_one_step() -> None:
    summary = make_fleet().agents["summary"]
    with pytest.raises(PlanError, match="at least one step"):
        fan_out([], then=summary.step(id="digest"))


@pytest.mark.parametrize("repeated", ["a", "digest"])
def test_fan_out_refuses_repeated_step_ids(repeated: str) -> None:
    fleet = make_fleet()
    sentiment, summary = fleet.agents["sentiment"], fleet.agents["summary"]
    steps = [sentiment.step(id="a"), sentiment.step(id=repeated)]
    with pytest.raises(PlanError, match=f"step id '{repeated}' appears more than once"):
        fan_out(steps, then=summary.step(id="digest"))


def test_fan_out_holds_only_steps() -> None:
    summary = make_fleet().agents["summary"]
    with pytest.raises(PlanError, match="not str"):
        fan_out(["review-0"], then=summary.step(id="digest"))  # type: ignore[list-item]


def test_the_fleet_plans_a_validated_input() -> None:
    fleet = make_fleet()
    plan = fleet.plan("review_digest", RAW)
    assert [s.worker_type for s in plan.all_steps()] == [
        "sentiment",
        "sentiment",
        "price_lookup",
        "summary",
    ]
    with pytest.raises(ValidationError) as info:
        fleet.plan("review_digest", {"product": "kettle", "reviews": []})
    assert [e["loc"] for e in info.value.errors()] == [("reviews",)]
    with pytest.raises(KeyError):
        fleet.plan("no_such_kind", RAW)


def test_a_plan_naming_an_agent_of_another_fleet_is_refused() -> None:
    ours, theirs = make_fleet("ours"), make_fleet("theirs")
    foreign = theirs.agents["sentiment"]

    @ours.job("borrowing", input=Reviews)
    def borrowing(inp: Reviews) -> Plan:
        return fan_out([foreign.step(id="stolen-0")], then=ours.agents["summary"].step(id="d"))

    with pytest.raises(ConfigError) as info:
        ours.plan("borrowing", RAW)
    message = str(info.value)
    # The step and the agent, and that it is not this fleet's (even by the same name).
    assert "step 'stolen-0'" in message
    assert "agent 'sentiment'" in message
    assert "fleet ours does not declare" in message


def test_a_then_step_of_another_fleet_is_refused_too() -> None:
    ours, theirs = make_fleet("ours"), Fleet("theirs")

    @theirs.tool("notify")
    def notify(args: dict[str, Any]) -> dict[str, Any]:
        return {}

    @ours.job("notifying", input=Reviews)
    def notifying(inp: Reviews) -> Plan:
        return fan_out([ours.agents["sentiment"].step(id="r")], then=notify.step(id="tell"))

    with pytest.raises(ConfigError, match=r"step 'tell' names tool 'notify'"):
        ours.plan("notifying", RAW)


def test_a_decomposer_must_return_a_plan() -> None:
    fleet = make_fleet()

    @fleet.job("sloppy", input=Reviews)
    def sloppy(inp: Reviews) -> Plan:
        return [fleet.agents["summary"].step(id="s")]  # type: ignore[return-value]

    with pytest.raises(ConfigError, match="job kind 'sloppy' returned list, not a Plan"):
        fleet.plan("sloppy", RAW)


@pytest.mark.parametrize("shape", ["repeated ids", "no steps", "no then-step"])
def test_a_plan_built_by_hand_is_checked_as_fan_out_checks_it(shape: str) -> None:
    fleet = make_fleet()
    sentiment, summary = fleet.agents["sentiment"], fleet.agents["summary"]
    plans: dict[str, Callable[[], Plan]] = {
        "repeated ids": lambda: Plan(
            steps=(sentiment.step(id="x"), sentiment.step(id="x")), then=summary.step(id="x")
        ),
        "no steps": lambda: Plan(steps=(), then=summary.step(id="digest")),
        "no then-step": lambda: Plan(steps=(sentiment.step(id="x"),)),
    }
    with pytest.raises(PlanError):
        plans[shape]()


def test_a_plan_error_is_the_inputs_fault_at_the_edge() -> None:
    fleet = make_fleet()

    @fleet.job("picky", input=Reviews)
    def picky(inp: Reviews) -> Plan:
        steps = [fleet.agents["sentiment"].step(id="same") for _ in inp.reviews]
        return fan_out(steps, then=fleet.agents["summary"].step(id="digest"))

    settings = read_settings().bind(fleet)
    with pytest.raises(SpecError) as info:
        parse_spec({"kind": "picky", "input": RAW}, settings)
    assert info.value.errors == [("input", "step id 'same' appears more than once")]


def test_parse_spec_puts_agent_and_tool_steps_on_the_wire() -> None:
    settings = read_settings().bind(make_fleet())
    spec, planned = parse_spec({"kind": "review_digest", "input": RAW}, settings)
    assert spec.kind == "review_digest"
    review, _, price = planned.subtasks
    assert (review.kind, review.worker_type, review.tier) == (StepKind.AGENT, "sentiment", "cheap")
    assert (review.instruction, review.text) == ("kettle", "Boils fast, love it.")
    assert (price.kind, price.worker_type, price.tier) == (StepKind.TOOL, "price_lookup", None)
    assert price.args == {"product": "kettle"}
    assert (planned.then.id, planned.then.tier) == ("digest", "reasoning")


# --- settings bound to a fleet -----------------------------------------------------------


def test_bind_merges_env_overrides_over_the_code_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fleet = make_fleet()
    defaults = read_settings().bind(fleet)
    monkeypatch.setenv("FLEETLINE_WORKERS__SENTIMENT__CONCURRENCY", "8")
    monkeypatch.setenv("FLEETLINE_WORKERS__SUMMARY__FALLBACK_TIERS", '["long_context"]')
    monkeypatch.setenv("FLEETLINE_WORKERS__PRICE_LOOKUP__MAX_RETRIES", "0")
    settings = read_settings().bind(fleet)

    sentiment = settings.worker("sentiment")
    # The override wins; the code's other defaults stay; the rest are WorkerPolicy's.
    assert (sentiment.concurrency, sentiment.max_retries, sentiment.tier) == (8, 5, "cheap")
    assert sentiment == defaults.worker("sentiment").model_copy(update={"concurrency": 8})
    assert settings.worker("summary").fallback_tiers == ["long_context"]
    assert settings.model_chain("summary") == ["sim-large", "sim-long"]
    lookup = settings.worker("price_lookup")
    assert (lookup.max_retries, lookup.max_call_s, lookup.tier) == (0, 2.5, None)
    assert settings.fleet is fleet
    assert set(settings.policies) == {"sentiment", "summary", "price_lookup"}


def test_bind_refuses_an_override_of_an_unknown_agent_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEETLINE_WORKERS__SENTIMNET__CONCURRENCY", "8")
    with pytest.raises(ConfigError) as info:
        read_settings().bind(make_fleet())
    message = str(info.value)
    assert "FLEETLINE_WORKERS__SENTIMNET__" in message
    assert "fleet acme has no agent or tool 'sentimnet'" in message
    assert "price_lookup, sentiment, summary" in message


def test_bind_refuses_an_invalid_override_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEETLINE_WORKERS__PRICE_LOOKUP__POOL", "fibers")
    with pytest.raises(ConfigError, match="FLEETLINE_WORKERS__PRICE_LOOKUP__POOL:"):
        read_settings().bind(make_fleet())


def test_bind_checks_the_code_defaults_against_the_visibility_timeout() -> None:
    fleet = Fleet("slow")
    fleet.agent(
        "ponder", tier="cheap", output=Summary, prompt="p", soft_time_limit_s=250, time_limit_s=280
    )
    with pytest.raises(ConfigError) as info:
        read_settings().bind(fleet)
    assert "FLEETLINE_WORKERS__PONDER" in str(info.value)
    assert "FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S" in str(info.value)


def test_bind_refuses_a_tier_the_settings_do_not_have() -> None:
    fleet = Fleet("tiers")
    fleet.agent("premium_agent", tier="premium", output=Summary, prompt="p")
    with pytest.raises(
        ConfigError, match=r"agent 'premium_agent' \(tier\): unknown tier 'premium'"
    ):
        read_settings().bind(fleet)


def test_one_settings_object_binds_to_several_fleets() -> None:
    unbound = read_settings()
    first, second = unbound.bind(make_fleet("one")), unbound.bind(make_fleet("two"))
    assert (first.fleet.name, second.fleet.name) == ("one", "two")
    with pytest.raises(ConfigError, match="not bound"):
        unbound.policies  # noqa: B018


# --- loading an app ----------------------------------------------------------------------

empty_fleet = Fleet("empty")
not_a_fleet: dict[str, list[str]] = {"agents": []}


@pytest.mark.parametrize(
    ("ref", "reason"),
    [
        ("nope:fleet", "cannot import 'nope'"),
        ("fleetline.examples.research:missing", "has no 'missing'"),
        ("json:dumps", "dumps is a function, not a fleetline.Fleet"),
        ("tests.unit.test_fleet_api:not_a_fleet", "not_a_fleet is a dict"),
        ("tests.unit.test_fleet_api:empty_fleet", "fleet empty declares no agent or tool"),
        ("fleetline.examples.research", "expected module:attribute"),
        (":fleet", "expected module:attribute"),
    ],
)
def test_an_app_that_cannot_load_is_a_config_error_naming_it(ref: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_fleet(ref)
    message = str(info.value)
    assert message.startswith(f"FLEETLINE_APP={ref}:")
    assert reason in message


def test_an_app_is_loaded_once() -> None:
    ref = "fleetline.examples.research:fleet"
    assert load_fleet(ref) is load_fleet(ref)
    assert load_fleet(ref) is load_fleet(None)
