"""The offline `sim` provider: deterministic, schema-valid answers and injected faults."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from fleetline.shared.errors import ConfigError, ModelTimeout, RetryableModelError
from fleetline.shared.models.base import ModelRequest
from fleetline.shared.models.factory import api_model_for, build_client
from fleetline.shared.models.sim import SimClient
from fleetline.shared.names import WorkerType
from fleetline.shared.outputs import (
    CLASSIFICATION_LABELS,
    OUTPUT_SCHEMAS,
    AnalysisOutput,
    ClassificationOutput,
    ExtractionOutput,
    SynthesisOutput,
)
from fleetline.shared.settings import FleetlineSettings, ProviderSettings, SimSettings

FINANCE = (
    "Acme Corp reported revenue of $4.2 million in 2023, up 12% from the prior year. "
    "Analysts at the Bank of America expect profit margins to widen as prices rise. "
    "The stock rose 3.5 percent after the earnings call.\n"
    "Jane Smith, the chief executive, said investors welcomed the dividend."
)
QUESTION = "Question: how did Acme revenue change in 2023 and why?"


def _request(worker_type: WorkerType = WorkerType.EXTRACTION, **overrides: Any) -> ModelRequest:
    fields: dict[str, Any] = {
        "model": "sim-small",
        "api_model": "sim-small",
        "worker_type": worker_type,
        "instruction": QUESTION,
        "document": FINANCE,
        "max_output_tokens": 400,
        "timeout_s": 5.0,
        "call_id": "job1:doc1",
    }
    fields.update(overrides)
    return ModelRequest(**fields)


def _sim(**settings: Any) -> SimClient:
    return SimClient(SimSettings(**settings))


def test_same_call_gives_same_answer() -> None:
    first = _sim(seed=7).complete(_request())
    second = _sim(seed=7).complete(_request())
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


def test_extraction_finds_names_and_figures() -> None:
    out = ExtractionOutput.model_validate_json(_sim().complete(_request()).text)
    assert "Acme Corp" in out.entities
    assert "Bank of America" in out.entities
    assert "Jane Smith" in out.entities
    assert {"12%", "$4.2 million", "2023", "3.5 percent"} <= set(out.figures)
    assert out.gist.startswith("Acme Corp reported revenue")


def test_classification_labels_by_keywords() -> None:
    out = ClassificationOutput.model_validate_json(
        _sim().complete(_request(WorkerType.CLASSIFICATION)).text
    )
    assert out.label == "finance"
    assert out.label in CLASSIFICATION_LABELS
    assert {"revenue", "profit", "stock"} <= set(out.keywords)
    assert 0.5 < out.confidence <= 1

    health = "The hospital said patients in the clinical trial responded to the new drug."
    out = ClassificationOutput.model_validate_json(
        _sim().complete(_request(WorkerType.CLASSIFICATION, document=health)).text
    )
    assert out.label == "health"
    plain = "Nothing here but a walk in the park on a sunny afternoon."
    out = ClassificationOutput.model_validate_json(
        _sim().complete(_request(WorkerType.CLASSIFICATION, document=plain)).text
    )
    assert (out.label, out.keywords) == ("other", [])


def test_analysis_picks_sentences_relevant_to_the_question() -> None:
    out = AnalysisOutput.model_validate_json(_sim().complete(_request(WorkerType.ANALYSIS)).text)
    assert out.findings[0].startswith("Acme Corp reported revenue of $4.2 million in 2023")
    assert 1 <= len(out.findings) <= 3
    assert 0 < out.relevance <= 1


def test_synthesis_builds_a_brief_from_upstream_findings() -> None:
    upstream = json.dumps(
        [
            {"findings": ["Acme revenue grew 12% in 2023.", "The weather was mild."]},
            {"findings": ["Higher prices drove Acme revenue."], "relevance": 0.8},
        ]
    )
    out = SynthesisOutput.model_validate_json(
        _sim().complete(_request(WorkerType.SYNTHESIS, document=upstream)).text
    )
    assert "Acme revenue grew 12% in 2023." in out.brief
    assert "Higher prices drove Acme revenue." in out.brief
    assert 1 <= len(out.key_points) <= 5
    assert out.key_points[0] != "The weather was mild."


@pytest.mark.parametrize("worker_type", list(WorkerType))
def test_every_answer_validates_and_fits_the_token_limit(worker_type: WorkerType) -> None:
    for max_tokens in (40, 120, 1200):
        response = _sim().complete(_request(worker_type, max_output_tokens=max_tokens))
        OUTPUT_SCHEMAS[worker_type].model_validate_json(response.text)
        assert 0 < response.tokens_out <= max_tokens
        assert response.tokens_in > 0


@pytest.mark.parametrize("worker_type", list(WorkerType))
def test_empty_document_still_gives_a_valid_answer(worker_type: WorkerType) -> None:
    response = _sim().complete(_request(worker_type, document=""))
    OUTPUT_SCHEMAS[worker_type].model_validate_json(response.text)


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


@pytest.mark.parametrize("worker_type", list(WorkerType))
def test_malformed_answers_fail_the_schema_until_corrected(worker_type: WorkerType) -> None:
    sim = _sim(malformed_rate=1.0)
    schema = OUTPUT_SCHEMAS[worker_type]
    for attempt in range(1, 8):
        bad = sim.complete(_request(worker_type, attempt=attempt))
        assert bad.tokens_out > 0
        with pytest.raises(ValidationError):
            schema.model_validate_json(bad.text)
    fixed = sim.complete(_request(worker_type, correction="field required: entities"))
    schema.model_validate_json(fixed.text)


def test_stalled_worker_type_times_out_within_its_timeout() -> None:
    sim = _sim(stall_types="analysis, synthesis", stall_ms=60_000)
    with pytest.raises(ModelTimeout):
        sim.complete(_request(WorkerType.ANALYSIS, timeout_s=0.02))
    # Other types are not stalled.
    sim.complete(_request(WorkerType.EXTRACTION, timeout_s=0.02))


def test_latency_beyond_the_timeout_is_a_timeout() -> None:
    with pytest.raises(ModelTimeout):
        _sim(latency_ms=10_000).complete(_request(timeout_s=0.02))
    response = _sim(latency_ms=5).complete(_request(timeout_s=1.0))
    assert response.latency_ms >= 5


def test_call_log_gets_one_line_per_call(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    sim = _sim(call_log=str(log), error_rate=0.5)
    for attempt in (1, 2, 3):
        with contextlib.suppress(RetryableModelError):
            sim.complete(_request(WorkerType.CLASSIFICATION, attempt=attempt, timeout_s=0.01))
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["attempt"] for line in lines] == [1, 2, 3]
    assert lines[0]["model"] == "sim-small"
    assert lines[0]["worker_type"] == "classification"
    assert lines[0]["call_id"] == "job1:doc1"
    assert lines[0]["pid"] == os.getpid()
    assert isinstance(lines[0]["t"], float)


def test_every_label_has_keywords() -> None:
    from fleetline.shared.models.sim import _KEYWORDS

    assert set(_KEYWORDS) | {"other"} == set(CLASSIFICATION_LABELS)


def test_factory_builds_sim_and_names_missing_keys() -> None:
    settings = FleetlineSettings(
        providers=ProviderSettings(openai_api_key=None, anthropic_api_key=None)
    )
    assert isinstance(build_client("sim-small", settings), SimClient)
    assert api_model_for("sim-small", settings) == "sim-small"
    assert api_model_for("claude-haiku", settings) == "claude-3-5-haiku-latest"
    with pytest.raises(ConfigError, match="FLEETLINE_OPENAI_API_KEY"):
        build_client("gpt-4o-mini", settings)
    with pytest.raises(ConfigError, match="FLEETLINE_ANTHROPIC_API_KEY"):
        build_client("claude-haiku", settings)
    with pytest.raises(ConfigError, match="no-such-model"):
        build_client("no-such-model", settings)
