"""The offline `sim` provider: deterministic answers and injected faults, no network.

Demos, tests and fault drills run the whole fleet on it. An agent that brings an answer of
its own for the sim (`fleet.agent(..., sim=...)`) gets that; any other gets its output
schema filled from the document (`sim_fill`). Every random choice comes from a generator
seeded by the call's content and attempt, so a run can be replayed exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import time
from collections.abc import Callable, Mapping
from typing import Any

from fleetline.shared.errors import ModelTimeout, ProviderServerError, RateLimited
from fleetline.shared.models.base import ModelRequest, ModelResponse, render_messages
from fleetline.shared.models.sim_fill import fill
from fleetline.shared.models.sim_tokens import count_tokens, fit_prefix, message_tokens
from fleetline.shared.settings import SimSettings

# A timeout fault fails fast: drills want the retry path, not a long wait.
_TIMEOUT_FAULT_S = 0.05

# An agent's own answer for the sim, from the call's (instruction, document).
Answer = Callable[[str, str], dict[str, Any]]


class SimClient:
    """A deterministic offline ModelClient with fault injection.

    Args:
        settings: latency, fault rates, seed, stalled agents and the optional call log.
        answers: agents' own answers by agent name; others get their schema filled.
    """

    def __init__(self, settings: SimSettings, answers: Mapping[str, Answer] | None = None) -> None:
        self._settings = settings
        self._answers = dict(answers or {})

    def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer one request, or raise the fault the seeded generator picks for it."""
        started = time.monotonic()
        s = self._settings
        system, user = render_messages(request)
        # The sim's own tokenizer, as a provider counts (never past the reservations' bound).
        tokens_in = message_tokens(system, user)
        if s.call_log:
            _log_call(s.call_log, request, tokens_in)
        rng = random.Random(_seed(s.seed, request))
        # Every draw is made up front, so changing one rate never reshuffles the others.
        fault_roll, fault_kind, malformed_roll, malformed_kind, wait = (
            rng.random() for _ in range(5)
        )

        if s.crash_at == "call" and s.crashes(request.worker_type, request.document):
            os.kill(os.getpid(), signal.SIGKILL)
        if s.down(request.model) or s.down(request.worker_type):
            raise ProviderServerError(f"sim: {request.model} is down (outage file)")
        if request.worker_type in s.stalled:
            time.sleep(min(s.stall_ms / 1000, request.timeout_s))
            raise ModelTimeout(f"sim: {request.worker_type} is stalled")
        if fault_roll < s.error_rate:
            _raise_fault(fault_kind, wait, request.timeout_s)
        latency_s = s.latency_ms / 1000
        if latency_s > request.timeout_s:
            time.sleep(request.timeout_s)
            raise ModelTimeout(f"sim: no answer within {request.timeout_s:g}s")

        # A re-ask after a validation failure always gets a valid answer, so that
        # correction prompts are seen to work.
        if malformed_roll < s.malformed_rate and not request.correction:
            text = _malformed(self._answer(request), request.max_output_tokens, malformed_kind)
        elif request.batch:
            text = self._batch_answer(request)
        else:
            text = _fit(self._answer(request), request.max_output_tokens)
        time.sleep(latency_s)
        tokens_out = min(count_tokens(text), request.max_output_tokens)
        if s.invoice:
            # Billed once answered (a malformed answer too); a fault above bills nothing.
            _append_line(s.invoice, invoice_line(request, tokens_in, tokens_out))
        return ModelResponse(
            text=text,
            model=request.model,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency_ms=(time.monotonic() - started) * 1000,
        )

    def _answer(self, request: ModelRequest) -> dict[str, Any]:
        """The agent's own answer, else its output schema filled from the document."""
        own = self._answers.get(request.worker_type)
        if own is not None:
            return own(request.instruction, request.document)
        if request.output_schema is None:
            return {"text": request.document[:200]}
        value = fill(
            request.output_schema,
            request.document or request.instruction.split("\nSchema:")[0],
            self._settings.seed,
        )
        return value if isinstance(value, dict) else {"value": value}

    def _batch_answer(self, request: ModelRequest) -> str:
        """One answer per document of a batched call, each within its share of the tokens."""
        n = len(request.batch)
        # The {"items": [...]} around the answers takes a few tokens of the call's limit too.
        wrapper = count_tokens('{"items": [') + count_tokens("]}") + (n - 1) * count_tokens(", ")
        share = max(1, (request.max_output_tokens - wrapper) // n)
        items = [
            _fit(self._answer(request.model_copy(update={"document": doc, "batch": ()})), share)
            for doc in request.batch
        ]
        # An item cut off mid-answer leaves the whole answer invalid, as a model's would be;
        # a tiny limit cuts the whole answer.
        text = '{"items": [' + ", ".join(items) + "]}"
        return fit_prefix(text, request.max_output_tokens)


def _seed(seed: int, request: ModelRequest) -> int:
    # hashlib, not hash(): str hashes are salted per process, and workers are many processes.
    parts = (
        str(seed),
        request.model,
        request.worker_type,
        request.instruction,
        request.document,
        str(request.attempt),
    )
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _log_call(path: str, request: ModelRequest, tokens_in: int) -> None:
    line = json.dumps(
        {
            "model": request.model,
            "worker_type": request.worker_type,
            "call_id": request.call_id,
            "job_id": request.job_id,
            "tenant": request.tenant,
            "batch_job_ids": list(request.batch_job_ids),
            "attempt": request.attempt,
            "correction": request.correction,
            "batch": len(request.batch),
            "tokens_in": tokens_in,
            "pid": os.getpid(),
            "t": time.time(),
        }
    )
    # One O_APPEND write per line keeps lines whole when many processes log at once.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _raise_fault(kind: float, wait: float, timeout_s: float) -> None:
    if kind < 1 / 3:
        raise RateLimited("sim: rate limited", retry_after_s=round(0.05 + 0.15 * wait, 3))
    if kind < 2 / 3:
        raise ProviderServerError("sim: injected server error")
    time.sleep(min(timeout_s, _TIMEOUT_FAULT_S))
    raise ModelTimeout("sim: injected timeout")


def _malformed(valid: dict[str, Any], max_tokens: int, kind: float) -> str:
    """What a model gets wrong: prose around the JSON, a missing field, or a cut-off."""
    if kind < 1 / 3:
        text = "Sure! Here is what I found in the document: " + " ".join(
            str(v) for v in valid.values()
        )
    elif kind < 2 / 3:
        text = _dumps(dict(list(valid.items())[1:]))
    else:
        full = _dumps(valid)
        text = full[: max(1, len(full) // 2)]
    return fit_prefix(text, max_tokens)


def _fit(answer: dict[str, Any], max_tokens: int) -> str:
    """The answer as JSON within max_tokens (the sim's tokens): trim lists, then strings,
    then cut like a model."""
    text = _dumps(answer)
    while count_tokens(text) > max_tokens:
        # Trim the biggest field that can still shrink without breaking the schema.
        for key in sorted(answer, key=lambda k: -count_tokens(_dumps(answer[k]))):
            trimmed = _trim(answer[key])
            if trimmed is not None:
                answer[key] = trimmed
                break
        else:
            # Nothing left to trim: the model ran out of tokens mid-answer.
            return fit_prefix(text, max_tokens)
        text = _dumps(answer)
    return text


def _dumps(value: object) -> str:
    # A model writes the characters themselves, not \u escapes: a CJK answer is billed
    # one token a character, and fitted to the limit so.
    return json.dumps(value, ensure_ascii=False)


def invoice_line(request: ModelRequest, tokens_in: int, tokens_out: int) -> dict[str, Any]:
    """The sim's bill for one answered call; a batch's ids are lists in item order."""
    batched = bool(request.batch)
    return {
        "model": request.model,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "call_id": list(request.batch_call_ids) if batched else request.call_id,
        "job_id": list(request.batch_job_ids) if batched else request.job_id,
        "tenant": request.tenant,
        "worker_type": request.worker_type,
        "attempt": request.attempt,
        "correction": bool(request.correction),
        "batch": len(request.batch),
    }


def _append_line(path: str, record: Mapping[str, Any]) -> None:
    """Append one JSON line with a single O_APPEND write (whole while many processes write)."""
    data = (json.dumps(record) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _trim(value: object) -> object | None:
    """A shorter value of the same shape (lists keep one item), or None."""
    if isinstance(value, list) and len(value) > 1:
        return value[:-1]
    if isinstance(value, list) and value and isinstance(value[0], str) and len(value[0]) > 16:
        return [value[0][: len(value[0]) // 2]]
    if isinstance(value, str) and len(value) > 16:
        return value[: len(value) // 2]
    return None
