"""The offline `sim` provider: deterministic answers and injected faults, no network.

Demos, tests and fault drills run the whole fleet on it. Its answers are real (if simple)
work on the document, so a pipeline built on it produces briefs that mean something, and
every random choice comes from a generator seeded by the call's content and attempt, so a
run can be replayed exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import time
from collections.abc import Callable
from typing import Any

from fleetline.shared.errors import ModelTimeout, ProviderServerError, RateLimited
from fleetline.shared.models.base import ModelRequest, ModelResponse, render_messages
from fleetline.shared.models.prices import estimate_tokens
from fleetline.shared.names import WorkerType
from fleetline.shared.settings import SimSettings

# A timeout fault fails fast: drills want the retry path, not a long wait.
_TIMEOUT_FAULT_S = 0.05

# Sentence ends, except after abbreviations such as "U.S." and "Corp.".
_SENTENCE_SPLIT = re.compile(
    r"(?<=[.!?])(?<![A-Z]\.[A-Z]\.)(?<!Mr\.)(?<!Ms\.)(?<!Dr\.)(?<!St\.)(?<!Co\.)"
    r"(?<!Inc\.)(?<!Ltd\.)(?<!Corp\.)\s+|\n+"
)
_WORD = re.compile(r"[a-z][a-z0-9'-]*")
_NAME_WORD = r"(?:[A-Z][a-z][A-Za-z0-9]*(?:[&'-][A-Za-z0-9]+)*|[A-Z]{2,}[a-z]?|[A-Z]\.(?:[A-Z]\.)+)"
_NAME = re.compile(rf"\b{_NAME_WORD}(?:[ \t]+(?:(?:of|de|&)[ \t]+)?{_NAME_WORD})*")
_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?"
_SCALE = r"(?:\s?(?:million|billion|trillion|thousand|bn|m|k)\b)?"
_FIGURE = re.compile(
    rf"[$€£¥]\s?{_NUM}{_SCALE}"
    rf"|\b{_NUM}\s?(?:%|percent\b|per cent\b)"
    rf"|\b{_NUM}(?:\s?(?:million|billion|trillion|thousand)\b)?"
)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Capitalised only because they open a sentence; never names on their own.
_LEADING = _words(
    "A An The This That These Those In On At For From By With As It Its Our Their We "
    "They He She But And Or If When While After Before Since During Meanwhile However"
)
_STOPWORDS = _words(
    "a an the and or but if of to in on at by for with from as is are was were be been "
    "being it its this that these those what which who whom how why when where do does "
    "did has have had not no so than then there their they them we our you your he she "
    "his her i me my about into over under up down out more most less can could would "
    "should will shall may might must also only any all each other such same own very "
    "answer question json object schema output documents document given using use "
    "following based findings finding brief key points"
)
# Keyword lists of the labels in shared.outputs.CLASSIFICATION_LABELS ("other" has none).
_KEYWORDS: dict[str, frozenset[str]] = {
    "finance": _words(
        "revenue revenues profit profits earnings market markets stock stocks shares "
        "investor investors bank banks interest inflation dividend quarter quarterly fiscal "
        "price prices debt bond bonds funding valuation acquisition ipo margin sales"
    ),
    "technology": _words(
        "software ai algorithm algorithms cloud computing computer chip chips semiconductor "
        "internet app apps platform network digital startup robot robots code cyber "
        "encryption processor"
    ),
    "health": _words(
        "patient patients hospital hospitals disease diseases clinical drug drugs vaccine "
        "vaccines medical health doctor doctors treatment virus therapy cancer diagnosis "
        "symptoms"
    ),
    "policy": _words(
        "government law laws regulation regulations regulator policy congress senate "
        "parliament election minister tax taxes legislation court ruling agency bill vote "
        "sanctions"
    ),
    "science": _words(
        "research researchers study scientists experiment physics chemistry biology climate "
        "species telescope laboratory theory molecule molecules gene genes universe "
        "hypothesis"
    ),
}


class SimClient:
    """A deterministic offline ModelClient with fault injection.

    Args:
        settings: latency, fault rates, seed, stalled worker types and the optional call log.
    """

    def __init__(self, settings: SimSettings) -> None:
        self._settings = settings

    def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer one request, or raise the fault the seeded generator picks for it."""
        started = time.monotonic()
        s = self._settings
        system, user = render_messages(request)
        tokens_in = estimate_tokens(system + user)
        if s.call_log:
            _log_call(s.call_log, request, tokens_in)
        rng = random.Random(_seed(s.seed, request))
        # Every draw is made up front, so changing one rate never reshuffles the others.
        fault_roll, fault_kind, malformed_roll, malformed_kind, wait = (
            rng.random() for _ in range(5)
        )

        if s.crashes(request.worker_type.value, request.document):
            os.kill(os.getpid(), signal.SIGKILL)
        if _down(s.outage_file, request.model):
            raise ProviderServerError(f"sim: {request.model} is down (outage file)")
        if request.worker_type.value in s.stalled:
            time.sleep(min(s.stall_ms / 1000, request.timeout_s))
            raise ModelTimeout(f"sim: {request.worker_type.value} is stalled")
        if fault_roll < s.error_rate:
            _raise_fault(fault_kind, wait, request.timeout_s)
        latency_s = s.latency_ms / 1000
        if latency_s > request.timeout_s:
            time.sleep(request.timeout_s)
            raise ModelTimeout(f"sim: no answer within {request.timeout_s:g}s")

        # A re-ask after a validation failure always gets a valid answer, so that
        # correction prompts are seen to work.
        if malformed_roll < s.malformed_rate and not request.correction:
            text = _malformed(request, malformed_kind)
        elif request.batch:
            text = _batch_answer(request)
        else:
            text = _fit(_ANSWERS[request.worker_type](request), request.max_output_tokens)
        time.sleep(latency_s)
        return ModelResponse(
            text=text,
            model=request.model,
            tokens_in=tokens_in,
            tokens_out=min(estimate_tokens(text), request.max_output_tokens),
            latency_ms=(time.monotonic() - started) * 1000,
        )


def _down(outage_file: str, model: str) -> bool:
    """Whether the outage file, read on every call so outages start and end live, names model."""
    if not outage_file:
        return False
    try:
        with open(outage_file) as f:
            return model in {line.strip() for line in f}
    except FileNotFoundError:
        return False


def _seed(seed: int, request: ModelRequest) -> int:
    # hashlib, not hash(): str hashes are salted per process, and workers are many processes.
    parts = (
        str(seed),
        request.model,
        request.worker_type.value,
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
            "worker_type": request.worker_type.value,
            "call_id": request.call_id,
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


def _batch_answer(request: ModelRequest) -> str:
    """One answer per document of a batched call, each within its share of the tokens."""
    share = max(1, request.max_output_tokens // len(request.batch))
    items = [
        json.loads(
            _fit(
                _ANSWERS[request.worker_type](
                    request.model_copy(update={"document": doc, "batch": ()})
                ),
                share,
            )
        )
        for doc in request.batch
    ]
    return json.dumps({"items": items})


def _malformed(request: ModelRequest, kind: float) -> str:
    """What a model gets wrong: prose around the JSON, a missing field, or a cut-off."""
    valid = _ANSWERS[request.worker_type](request)
    if kind < 1 / 3:
        text = "Sure! Here is what I found in the document: " + " ".join(
            str(v) for v in valid.values()
        )
    elif kind < 2 / 3:
        text = json.dumps(dict(list(valid.items())[1:]))
    else:
        full = json.dumps(valid)
        text = full[: max(1, len(full) // 2)]
    return text[: request.max_output_tokens * 4]


def _fit(answer: dict[str, Any], max_tokens: int) -> str:
    """The answer as JSON within max_tokens: trim lists, then strings, then cut like a model."""
    limit = max_tokens * 4
    text = json.dumps(answer)
    while len(text) > limit:
        # Trim the biggest field that can still shrink without breaking the schema.
        for key in sorted(answer, key=lambda k: -len(json.dumps(answer[k]))):
            trimmed = _trim(answer[key])
            if trimmed is not None:
                answer[key] = trimmed
                break
        else:
            # Nothing left to trim: the model ran out of tokens mid-answer.
            return text[:limit]
        text = json.dumps(answer)
    return text


def _trim(value: object) -> object | None:
    """A shorter value of the same shape (lists keep one item), or None."""
    if isinstance(value, list) and len(value) > 1:
        return value[:-1]
    if isinstance(value, list) and value and isinstance(value[0], str) and len(value[0]) > 16:
        return [value[0][: len(value[0]) // 2]]
    if isinstance(value, str) and len(value) > 16:
        return value[: len(value) // 2]
    return None


def _plain_text(document: str) -> str:
    """Documents may be upstream JSON results: read their strings as lines of prose."""
    try:
        data = json.loads(document)
    except ValueError:
        return document
    strings: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, str):
            strings.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data)
    return "\n".join(strings) if strings else document


def _sentences(text: str) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for raw in _SENTENCE_SPLIT.split(_plain_text(text)):
        sentence = " ".join(raw.split())
        if sentence and sentence.lower() not in seen:
            seen.add(sentence.lower())
            out.append(sentence)
    return out


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and len(w) > 2}


def _ranked(request: ModelRequest) -> tuple[list[tuple[float, int, str]], set[str]]:
    """Sentences scored by the share of the instruction's words they contain, best first."""
    question = _content_words(request.instruction)
    scored = []
    for i, sentence in enumerate(_sentences(request.document)):
        overlap = len(question & _content_words(sentence)) / len(question) if question else 0.0
        scored.append((overlap, i, sentence))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return scored, question


def _extraction(request: ModelRequest) -> dict[str, Any]:
    text = _plain_text(request.document)
    entities: list[str] = []
    for match in _NAME.finditer(text):
        words = match.group().split()
        at_start = _opens_sentence(text, match.start())
        while words and words[0] in _LEADING:
            words, at_start = words[1:], False
        # A lone capitalised word opening a sentence is usually just a word.
        if not words or (len(words) == 1 and at_start and not words[0].isupper()):
            continue
        name = " ".join(words)
        if name not in entities:
            entities.append(name)
    figures = list(dict.fromkeys(m.group().strip() for m in _FIGURE.finditer(text)))
    first = next(iter(_sentences(request.document)), "")
    return {
        "entities": entities[:50],
        "figures": figures[:50],
        "gist": first[:240] or "(empty document)",
    }


def _opens_sentence(text: str, pos: int) -> bool:
    before = text[:pos].rstrip()
    return not before or before[-1] in ".!?\n:;\"'"


def _classification(request: ModelRequest) -> dict[str, Any]:
    words = _WORD.findall(_plain_text(request.document).lower())
    hits = {label: [w for w in words if w in kws] for label, kws in _KEYWORDS.items()}
    total = sum(len(h) for h in hits.values())
    if not total:
        # No evidence either way: "other", held with middling confidence.
        return {"label": "other", "confidence": 0.5, "keywords": []}
    label = max(_KEYWORDS, key=lambda lbl: len(hits[lbl]))
    return {
        "label": label,
        "confidence": round(len(hits[label]) / total, 3),
        "keywords": list(dict.fromkeys(hits[label]))[:20],
    }


def _analysis(request: ModelRequest) -> dict[str, Any]:
    scored, question = _ranked(request)
    top = [s for _, _, s in scored[:3]]
    if not top:
        return {"findings": ["The documents contain no text."], "relevance": 0.0}
    covered = set().union(*(_content_words(s) for s in top)) & question
    relevance = len(covered) / len(question) if question else 0.0
    return {"findings": [s[:400] for s in top], "relevance": round(relevance, 3)}


def _synthesis(request: ModelRequest) -> dict[str, Any]:
    scored, _ = _ranked(request)
    best = scored[:8]
    if not best:
        return {"brief": "No usable findings were available.", "key_points": []}
    # The brief reads in document order; the key points lead with the strongest.
    brief = " ".join(s for _, _, s in sorted(best, key=lambda item: item[1]))
    return {"brief": brief[:4000], "key_points": [s[:200] for _, _, s in best[:5]]}


_ANSWERS: dict[WorkerType, Callable[[ModelRequest], dict[str, Any]]] = {
    WorkerType.EXTRACTION: _extraction,
    WorkerType.CLASSIFICATION: _classification,
    WorkerType.ANALYSIS: _analysis,
    WorkerType.SYNTHESIS: _synthesis,
}
