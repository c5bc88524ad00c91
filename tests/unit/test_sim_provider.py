"""The offline `sim` provider: deterministic, schema-valid answers and injected faults.

Generic behaviour, for any fleet: the agents here are declared by the test, with output
models the sim has never seen. The example fleet's own sim answers are tested in
test_research_example.py.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

from fleetline.shared.errors import (
    ConfigError,
    ModelTimeout,
    ProviderServerError,
    RetryableModelError,
)
from fleetline.shared.fleet import FleetDefinition, load_fleet
from fleetline.shared.models.base import ModelRequest
from fleetline.shared.models.factory import api_model_for, build_client
from fleetline.shared.models.sim import SimClient
from fleetline.shared.settings import FleetlineSettings, ProviderSettings, SimSettings

FINANCE = (
    "Acme Corp reported revenue of $4.2 million in 2023, up 12% from the prior year. "
    "Analysts at the Bank of America expect profit margins to widen as prices rise. "
    "The stock rose 3.5 percent after the earnings call.\n"
    "Jane Smith, the chief executive, said investors welcomed the dividend."
)
GOAL = "how did Acme revenue change in 2023 and why?"


class Finding(BaseModel):
    claim: str = Field(min_length=1, max_length=300)
    confidence: float = Field(ge=0, le=1)


class Digest(BaseModel):
    """A shape no sim answer was written for."""

    headline: str = Field(min_length=1, max_length=200)
    people: list[str]
    amounts: list[str]
    findings: list[Finding] = Field(min_length=1, max_length=5)
    sentiment: Literal["positive", "negative", "neutral"]
    year: int = Field(ge=1900, le=2100)


class Tag(BaseModel):
    tag: str = Field(min_length=1, max_length=40)
    score: float = Field(ge=0, le=1)


def own_answer(instruction: str, document: str) -> dict[str, Any]:
    """An agent's own sim answer: the first word of the document."""
    words = document.split()
    return {"tag": words[0] if words else "none", "score": 1.0}


fleet = FleetDefinition("simtests")
digest = fleet.agent("digest", tier="cheap", output=Digest, prompt="Digest the text. {goal}")
tagger = fleet.agent("tagger", tier="cheap", output=Tag, prompt="Tag it.", sim=own_answer)
AGENTS = {"digest": digest, "tagger": tagger}
ANSWERS = {"tagger": own_answer}


def _request(worker_type: str = "digest", **overrides: Any) -> ModelRequest:
    agent = AGENTS.get(worker_type)
    fields: dict[str, Any] = {
        "model": "sim-small",
        "api_model": "sim-small",
        "worker_type": worker_type,
        "instruction": agent.instruction(GOAL) if agent else GOAL,
        "document": FINANCE,
        "max_output_tokens": 400,
        "timeout_s": 5.0,
        "call_id": "job1:doc1",
        "output_schema": agent.output_schema if agent else None,
    }
    fields.update(overrides)
    return ModelRequest(**fields)


def _sim(**settings: Any) -> SimClient:
    return SimClient(SimSettings(**settings), ANSWERS)


# --- determinism -------------------------------------------------------------------------


@pytest.mark.parametrize("worker_type", ["digest", "tagger"])
def test_same_call_gives_same_answer(worker_type: str) -> None:
    first = _sim(seed=7).complete(_request(worker_type))
    second = _sim(seed=7).complete(_request(worker_type))
    assert (first.text, first.tokens_in, first.tokens_out) == (
        second.text,
        second.tokens_in,
        second.tokens_out,
    )


def test_faults_follow_seed_and_attempt() -> None:
    """Which calls fail is a function of (seed, content, attempt), replayable exactly."""

    def outcomes(seed: int) -> list[str]:
        sim = _sim(seed=seed, error_rate=0.5)
        result = []
        for attempt in range(1, 25):
            try:
                sim.complete(_request(attempt=attempt, timeout_s=0.01))
                result.append("ok")
            except RetryableModelError as exc:
                result.append(type(exc).__name__)
        return result

    assert outcomes(1) == outcomes(1)
    assert outcomes(1) != outcomes(2)
    assert {"ok"} < set(outcomes(1))


# --- answers -----------------------------------------------------------------------------


def test_a_schema_the_sim_has_never_seen_is_filled_from_the_document() -> None:
    out = Digest.model_validate_json(_sim().complete(_request()).text)
    # Names and figures come from the text, not from nowhere.
    assert {"Acme Corp", "Jane Smith"} <= set(out.people)
    assert "$4.2 million" in out.amounts
    assert any(word in out.headline for word in ("Acme", "revenue"))
    assert out.sentiment in ("positive", "negative", "neutral")
    assert 1900 <= out.year <= 2100


@pytest.mark.parametrize("seed", [0, 1, 2, 99])
def test_a_filled_schema_validates_whatever_the_seed(seed: int) -> None:
    Digest.model_validate_json(_sim(seed=seed).complete(_request()).text)


def test_an_agents_own_answer_is_used_instead_of_filling_its_schema() -> None:
    out = Tag.model_validate_json(_sim().complete(_request("tagger")).text)
    assert (out.tag, out.score) == ("Acme", 1.0)
    # Without the answer the same agent's schema is filled instead.
    filled = SimClient(SimSettings()).complete(_request("tagger"))
    Tag.model_validate_json(filled.text)
    assert json.loads(filled.text) != {"tag": "Acme", "score": 1.0}


def test_a_call_without_a_schema_or_an_answer_echoes_the_document() -> None:
    response = _sim().complete(_request("unknown", output_schema=None))
    assert json.loads(response.text) == {"text": FINANCE[:200]}


@pytest.mark.parametrize("worker_type", ["digest", "tagger"])
def test_every_answer_fits_the_token_limit(worker_type: str) -> None:
    schema = AGENTS[worker_type].output
    for max_tokens in (40, 120, 1200):
        response = _sim().complete(_request(worker_type, max_output_tokens=max_tokens))
        assert 0 < response.tokens_out <= max_tokens
        assert response.tokens_in > 0
        assert len(response.text) <= max_tokens * 4
        if max_tokens >= 120:
            # Room enough for the whole answer: it is trimmed to fit, never cut.
            schema.model_validate_json(response.text)


def test_a_tight_token_limit_trims_lists_before_cutting() -> None:
    roomy = json.loads(_sim().complete(_request(max_output_tokens=1200)).text)
    tight = json.loads(_sim().complete(_request(max_output_tokens=100)).text)
    Digest.model_validate(tight)
    assert len(tight["people"]) <= len(roomy["people"])
    assert len(json.dumps(tight)) < len(json.dumps(roomy))


@pytest.mark.parametrize("worker_type", ["digest", "tagger"])
def test_empty_document_still_gives_a_valid_answer(worker_type: str) -> None:
    response = _sim().complete(_request(worker_type, document=""))
    AGENTS[worker_type].output.model_validate_json(response.text)


# --- batching ----------------------------------------------------------------------------


def test_a_batched_call_answers_each_document_in_order() -> None:
    docs = ("Alpha rose.", "Beta fell sharply.", "Gamma held steady.")
    response = _sim().complete(_request("tagger", batch=docs))
    items = json.loads(response.text)["items"]
    assert [Tag.model_validate(i).tag for i in items] == ["Alpha", "Beta", "Gamma"]


def test_each_answer_of_a_batch_fits_its_share_of_the_tokens() -> None:
    docs = (FINANCE, "The hospital said patients responded.", "Nothing here.")
    response = _sim().complete(_request(batch=docs, max_output_tokens=600))
    items = json.loads(response.text)["items"]
    assert len(items) == 3
    for item in items:
        Digest.model_validate(item)
        assert len(json.dumps(item)) <= 600 // 3 * 4
    assert response.tokens_out <= 600


def test_a_batched_answer_is_the_single_answer_per_document() -> None:
    docs = ("Alpha rose.", FINANCE)
    items = json.loads(_sim().complete(_request(batch=docs, max_output_tokens=2400)).text)
    singles = [
        json.loads(_sim().complete(_request(document=d, max_output_tokens=1200)).text) for d in docs
    ]
    assert items["items"] == singles


# --- faults ------------------------------------------------------------------------------


def test_error_rate_one_always_raises_a_retryable_error() -> None:
    sim = _sim(error_rate=1.0)
    kinds = set()
    for attempt in range(1, 30):
        with pytest.raises(RetryableModelError) as info:
            sim.complete(_request(attempt=attempt, timeout_s=0.01))
        kinds.add(info.value.category)
        if info.value.category == "rate_limited":
            assert info.value.retry_after_s is not None
            assert 0 < info.value.retry_after_s <= 0.2
    assert kinds == {"rate_limited", "server_error", "timeout"}


@pytest.mark.parametrize("worker_type", ["digest", "tagger"])
def test_malformed_answers_fail_the_schema_until_corrected(worker_type: str) -> None:
    sim = _sim(malformed_rate=1.0)
    schema = AGENTS[worker_type].output
    for attempt in range(1, 8):
        bad = sim.complete(_request(worker_type, attempt=attempt))
        assert bad.tokens_out > 0
        with pytest.raises(ValidationError):
            schema.model_validate_json(bad.text)
    fixed = sim.complete(_request(worker_type, correction="headline: Field required"))
    schema.model_validate_json(fixed.text)


def test_stalled_agent_times_out_within_its_timeout() -> None:
    sim = _sim(stall_types="digest, other", stall_ms=60_000)
    with pytest.raises(ModelTimeout, match="digest is stalled"):
        sim.complete(_request("digest", timeout_s=0.02))
    # Other agents are not stalled.
    sim.complete(_request("tagger", timeout_s=0.02))


def test_latency_beyond_the_timeout_is_a_timeout() -> None:
    with pytest.raises(ModelTimeout):
        _sim(latency_ms=10_000).complete(_request(timeout_s=0.02))
    response = _sim(latency_ms=5).complete(_request(timeout_s=1.0))
    assert response.latency_ms >= 5


@pytest.mark.parametrize("down", ["sim-small", "digest"])
def test_the_outage_file_takes_a_model_or_an_agent_down_while_it_exists(
    tmp_path: Path, down: str
) -> None:
    outage = tmp_path / "outage"
    sim = _sim(outage_file=str(outage))
    sim.complete(_request())  # no file: no outage
    outage.write_text(f"something-else\n{down}\n")
    with pytest.raises(ProviderServerError, match="down"):
        sim.complete(_request())
    # The other agent (on another model) is unaffected by an agent's outage.
    if down == "digest":
        sim.complete(_request("tagger", model="sim-large", api_model="sim-large"))
    outage.unlink()
    sim.complete(_request())


def test_down_reads_names_one_per_line(tmp_path: Path) -> None:
    outage = tmp_path / "outage"
    outage.write_text("  lookup  \nsim-large\n")
    settings = SimSettings(outage_file=str(outage))
    assert settings.down("lookup") and settings.down("sim-large")
    assert not settings.down("look") and not settings.down("sim")
    assert not SimSettings().down("lookup")


def test_the_crash_marker_kills_only_the_listed_agents_and_tools() -> None:
    everyone = SimSettings(crash_marker="POISON")
    assert everyone.crashes("digest", "a POISON pill")
    assert not everyone.crashes("digest", "a harmless text")
    listed = SimSettings(crash_marker="POISON", crash_types="lookup, digest")
    assert listed.crashes("lookup", "POISON") and listed.crashes("digest", "POISON")
    assert not listed.crashes("tagger", "POISON")
    assert not SimSettings(crash_types="digest").crashes("digest", "POISON")


def test_call_log_gets_one_line_per_call(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    sim = _sim(call_log=str(log), error_rate=0.5)
    for attempt in (1, 2, 3):
        with contextlib.suppress(RetryableModelError):
            sim.complete(_request("tagger", attempt=attempt, timeout_s=0.01))
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["attempt"] for line in lines] == [1, 2, 3]
    assert lines[0]["model"] == "sim-small"
    assert lines[0]["worker_type"] == "tagger"
    assert lines[0]["call_id"] == "job1:doc1"
    assert lines[0]["pid"] == os.getpid()
    assert isinstance(lines[0]["t"], float)


# --- the factory -------------------------------------------------------------------------


def test_factory_builds_sim_and_names_missing_keys() -> None:
    settings = FleetlineSettings(
        providers=ProviderSettings(openai_api_key=None, anthropic_api_key=None)
    ).bind(load_fleet())
    assert isinstance(build_client("sim-small", settings), SimClient)
    assert api_model_for("sim-small", settings) == "sim-small"
    assert api_model_for("claude-haiku", settings) == "claude-3-5-haiku-latest"
    with pytest.raises(ConfigError, match="FLEETLINE_OPENAI_API_KEY"):
        build_client("gpt-4o-mini", settings)
    with pytest.raises(ConfigError, match="FLEETLINE_ANTHROPIC_API_KEY"):
        build_client("claude-haiku", settings)
    with pytest.raises(ConfigError, match="no-such-model"):
        build_client("no-such-model", settings)


def test_the_factorys_sim_answers_with_the_fleets_own_answers() -> None:
    sim = build_client("sim-small", FleetlineSettings().bind(fleet))
    assert Tag.model_validate_json(sim.complete(_request("tagger")).text).tag == "Acme"
    Digest.model_validate_json(sim.complete(_request("digest")).text)
