"""The sim bills like a provider: its own tokenizer, answers that fit, and an invoice."""

from __future__ import annotations

import json
import multiprocessing
import signal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from fleetline.shared.errors import ModelTimeout, RetryableModelError
from fleetline.shared.models.base import ModelRequest, render_messages
from fleetline.shared.models.prices import input_token_bound
from fleetline.shared.models.sim import SimClient
from fleetline.shared.models.sim_tokens import (
    SIM_MESSAGE_OVERHEAD_TOKENS,
    count_tokens,
    fit_prefix,
    message_tokens,
)
from fleetline.shared.settings import SimSettings

CJK = "富士山は日本で一番高い山です。东京的人口很多、经济发展迅速。한국어 문장도 있습니다。" * 40


class Note(BaseModel):
    title: str = Field(min_length=1)
    points: list[str]
    summary: str


def first_word(instruction: str, document: str) -> dict[str, Any]:
    words = document.split()
    return {"tag": words[0] if words else "none", "score": 1.0}


SCHEMA = Note.model_json_schema()


def _request(**overrides: Any) -> ModelRequest:
    fields: dict[str, Any] = {
        "model": "sim-small",
        "api_model": "sim-small",
        "worker_type": "note",
        "instruction": "Summarise the document as a note.",
        "document": CJK,
        "max_output_tokens": 120,
        "timeout_s": 5.0,
        "call_id": "job1:s1:1:sim-small",
        "job_id": "job1",
        "tenant": "acme",
        "output_schema": SCHEMA,
    }
    fields.update(overrides)
    return ModelRequest(**fields)


def _invoice(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- the tokenizer -----------------------------------------------------------------------


def test_cjk_and_other_non_latin_characters_are_one_token_each() -> None:
    assert count_tokens("富士山") == 3
    assert count_tokens("东京的人口") == 5
    assert count_tokens("Привет") == 6  # Cyrillic is not Latin script
    assert count_tokens("😀😀") == 2


def test_latin_text_is_about_four_characters_a_token() -> None:
    assert count_tokens("") == 0
    assert count_tokens("a") == 1
    assert count_tokens("abcd") == 1
    assert count_tokens("abcde") == 2
    # Accented Latin letters, punctuation and whitespace share tokens too.
    assert count_tokens("naïve café — “quoted”") == 6
    english = "The quick brown fox jumps over the lazy dog. " * 20
    assert count_tokens(english) == -(-len(english) // 4)


def test_mixed_text_counts_each_latin_run_on_its_own() -> None:
    # "hello " (2) + 世界 (2) + " again" (2)
    assert count_tokens("hello 世界 again") == 6


def test_each_message_adds_its_overhead() -> None:
    assert message_tokens("abcd", "") == 1 + 2 * SIM_MESSAGE_OVERHEAD_TOKENS
    assert message_tokens() == 0


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text())
def test_never_more_tokens_than_the_reservations_input_bound(system: str, user: str) -> None:
    for text in (system, user):
        assert count_tokens(text) <= len(text)
        assert count_tokens(text) <= len(text.encode("utf-8"))
    assert message_tokens(system, user) <= input_token_bound(system, user)


@settings(max_examples=300, deadline=None)
@given(st.text(), st.integers(min_value=0, max_value=50))
def test_a_cut_is_the_longest_prefix_that_fits(text: str, limit: int) -> None:
    cut = fit_prefix(text, limit)
    assert text.startswith(cut)
    assert count_tokens(cut) <= limit
    if cut != text:
        assert count_tokens(text[: len(cut) + 1]) > limit


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text())
def test_tokens_never_shrink_as_text_grows(left: str, right: str) -> None:
    assert count_tokens(left) <= count_tokens(left + right)
    assert count_tokens(left + right) <= count_tokens(left) + count_tokens(right)


def test_the_sim_bills_the_rendered_messages_with_its_tokenizer() -> None:
    request = _request()
    response = SimClient(SimSettings()).complete(request)
    assert response.tokens_in == message_tokens(*render_messages(request))
    assert response.tokens_in <= input_token_bound(*render_messages(request))
    assert response.tokens_out == count_tokens(response.text)


# --- answers fit the limit under the sim's tokens ----------------------------------------


@pytest.mark.parametrize("max_tokens", [8, 40, 120, 400])
def test_a_cjk_answer_fits_its_token_limit(max_tokens: int) -> None:
    sim = SimClient(SimSettings(), {"tagger": first_word})
    for request in (
        _request(max_output_tokens=max_tokens),
        _request(worker_type="tagger", output_schema=None, max_output_tokens=max_tokens),
        _request(worker_type="other", output_schema=None, max_output_tokens=max_tokens),
    ):
        response = sim.complete(request)
        # Counted, not capped: the text itself is within the limit.
        assert count_tokens(response.text) == response.tokens_out <= max_tokens
        assert "\\u" not in response.text, "a model writes the characters, not escapes"
    if max_tokens >= 120:
        Note.model_validate_json(sim.complete(_request(max_output_tokens=max_tokens)).text)


def test_a_cjk_batch_fits_its_token_limit() -> None:
    docs = (CJK, CJK[:300], "Acme rose 4%.")
    sim = SimClient(SimSettings(), {"tagger": first_word})
    for max_tokens in (60, 300, 900):
        response = sim.complete(
            _request(worker_type="tagger", batch=docs, document="", max_output_tokens=max_tokens)
        )
        assert count_tokens(response.text) == response.tokens_out <= max_tokens
        if max_tokens >= 300:
            assert len(json.loads(response.text)["items"]) == 3


@pytest.mark.parametrize("attempt", range(1, 7))
def test_a_malformed_cjk_answer_fits_too(attempt: int) -> None:
    sim = SimClient(SimSettings(malformed_rate=1.0))
    response = sim.complete(_request(max_output_tokens=30, attempt=attempt))
    assert 0 < count_tokens(response.text) == response.tokens_out <= 30


# --- the invoice -------------------------------------------------------------------------


def test_an_answered_call_is_billed_once_on_the_invoice(tmp_path: Path) -> None:
    invoice = tmp_path / "invoice.jsonl"
    response = SimClient(SimSettings(invoice=str(invoice))).complete(_request(attempt=2))
    assert _invoice(invoice) == [
        {
            "model": "sim-small",
            "tokens_in": response.tokens_in,
            "tokens_out": response.tokens_out,
            "call_id": "job1:s1:1:sim-small",
            "job_id": "job1",
            "tenant": "acme",
            "worker_type": "note",
            "attempt": 2,
            "correction": False,
            "batch": 0,
        }
    ]


def test_malformed_answers_and_their_corrections_are_billed(tmp_path: Path) -> None:
    invoice = tmp_path / "invoice.jsonl"
    sim = SimClient(SimSettings(invoice=str(invoice), malformed_rate=1.0))
    bad = sim.complete(_request())
    fixed = sim.complete(_request(call_id="job1:s1:1:sim-small:c1", correction="title: missing"))
    lines = _invoice(invoice)
    assert [(x["call_id"], x["correction"], x["tokens_out"]) for x in lines] == [
        ("job1:s1:1:sim-small", False, bad.tokens_out),
        ("job1:s1:1:sim-small:c1", True, fixed.tokens_out),
    ]


def test_a_batch_is_one_line_with_its_items_ids_in_order(tmp_path: Path) -> None:
    invoice = tmp_path / "invoice.jsonl"
    sim = SimClient(SimSettings(invoice=str(invoice)), {"tagger": first_word})
    response = sim.complete(
        _request(
            worker_type="tagger",
            output_schema=None,
            document="",
            batch=("Alpha rose.", "Beta fell."),
            call_id="batch:j1:s1:1:sim-small+1",
            batch_call_ids=("j1:s1:1:sim-small", "j2:s4:1:sim-small"),
            batch_job_ids=("j1", "j2"),
            job_id="",
        )
    )
    (line,) = _invoice(invoice)
    assert line["call_id"] == ["j1:s1:1:sim-small", "j2:s4:1:sim-small"]
    assert line["job_id"] == ["j1", "j2"]
    assert (line["tenant"], line["batch"]) == ("acme", 2)
    assert (line["tokens_in"], line["tokens_out"]) == (response.tokens_in, response.tokens_out)


def test_faults_bill_nothing(tmp_path: Path) -> None:
    invoice = tmp_path / "invoice.jsonl"
    outage = tmp_path / "outage"
    outage.write_text("sim-small\n")
    cases: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"error_rate": 1.0}, {"timeout_s": 0.01}),
        ({"stall_types": "note", "stall_ms": 10}, {}),
        ({"latency_ms": 10_000}, {"timeout_s": 0.01}),
        ({"outage_file": str(outage)}, {}),
    ]
    for sim_settings, request in cases:
        sim = SimClient(SimSettings(invoice=str(invoice), **sim_settings))
        for attempt in range(1, 6):
            with pytest.raises((RetryableModelError, ModelTimeout)):
                sim.complete(_request(attempt=attempt, **request))
    assert _invoice(invoice) == []


def _crash(invoice: str) -> None:  # pragma: no cover  (runs in a child that is killed)
    sim = SimClient(SimSettings(invoice=invoice, crash_marker="POISON"))
    sim.complete(_request(document="POISON pill"))


def test_a_crash_kills_before_billing(tmp_path: Path) -> None:
    invoice = tmp_path / "invoice.jsonl"
    child = multiprocessing.get_context("spawn").Process(target=_crash, args=(str(invoice),))
    child.start()
    child.join(10)
    assert child.exitcode == -signal.SIGKILL
    assert _invoice(invoice) == []


def test_many_writers_keep_lines_whole(tmp_path: Path) -> None:
    invoice = tmp_path / "invoice.jsonl"
    # Spawned, not forked: a fork of a process with threads can inherit a held lock.
    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=_bill_many, args=(str(invoice), n)) for n in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
    lines = _invoice(invoice)
    assert len(lines) == 4 * 25
    assert len({x["call_id"] for x in lines}) == 100


def _bill_many(invoice: str, n: int) -> None:  # pragma: no cover  (runs in a child)
    sim = SimClient(SimSettings(invoice=invoice))
    for i in range(25):
        sim.complete(_request(call_id=f"job{n}:s{i}:1:sim-small", document="Acme rose."))
