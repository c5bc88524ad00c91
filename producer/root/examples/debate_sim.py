"""The debate agents' answers on the offline `sim` provider: they really disagree, and
converge.

Each debater reads its own part of the evidence (a seeded draw of its sentences) and
answers with the name that part mentions most. In later rounds it keeps its answer when
the last round's majority shares it, and otherwise moves to the majority with a seeded
probability: some debates agree at once, some after a round or two, some never. The
judge answers with the last round's majority. Every draw is seeded by the call's own
text, so the same debate always runs the same way.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from typing import Any

from fleetline import sim

# How likely a debater outside the majority is to join it in the next round.
JOIN_MAJORITY = 0.5
# The share of the evidence sentences each debater reads.
READS = 0.5
HISTORY_HEADER = "Earlier rounds of the debate:"
_TURN = re.compile(r"^- ([\w.-]+): (.*)$")
_ROUND = re.compile(r"^Round (\d+):$")
_SELF = re.compile(r"You are ([\w.-]+)\.")
# With no names in the evidence, a debater still takes a side.
_STANCES = ("yes", "no", "not enough evidence")


def debater(instruction: str, document: str) -> dict[str, Any]:
    """One debater's answer in one round."""
    me = _self(instruction)
    case, history = _split(document)
    question, evidence = _question(case), _evidence(case)
    rng = _rng(me, question, *evidence)
    read = [s for s in evidence if rng.random() < READS] or evidence[:1]
    answer, why = _reading(question, read, evidence, rng)
    if history:
        mine = history[-1].get(me)
        majority = _majority(history[-1])
        turn = _rng(me, question, str(len(history)), repr(history))
        if mine is not None and majority is not None and mine != majority:
            if turn.random() < JOIN_MAJORITY:
                answer, why = majority, f"moved to the majority of round {len(history)}"
            else:
                answer, why = mine, f"kept its answer against the majority ({majority})"
        elif mine is not None:
            answer, why = mine, f"the majority of round {len(history)} shares it"
    return {"answer": answer, "reasoning": why, "confidence": round(0.5 + 0.5 * rng.random(), 3)}


def judge(instruction: str, document: str) -> dict[str, Any]:
    """The answer most debaters gave in the last round, with how many gave it."""
    _, history = _split(document)
    if not history:
        return {"answer": "no answer", "rationale": "the debaters gave no answers", "support": 0}
    last = history[-1]
    majority = _majority(last) or "no answer"
    support = sum(1 for a in last.values() if a == majority) / max(1, len(last))
    return {
        "answer": majority,
        "rationale": f"{round(support * len(last))} of {len(last)} debaters answered "
        f"{majority} in round {len(history)}",
        "support": round(support, 3),
    }


def _reading(
    question: str, read: list[str], evidence: list[str], rng: random.Random
) -> tuple[str, str]:
    """The name the sentences it read support best: each sentence counts for every name in
    it (but those the question names itself), the more so the more of the question's words
    it shares."""
    asked = sim.content_words(question)
    scores: Counter[str] = Counter()
    for sentence in read:
        weight = 1 + 2 * len(asked & sim.content_words(sentence))
        for name in sim.names(sentence):
            if name not in question:
                scores[name] += weight
    if scores:
        top = max(scores.values())
        best = sorted(n for n, c in scores.items() if c == top)
        answer = best[0] if len(best) == 1 else rng.choice(best)
        return answer, f"best supported by the {len(read)} of {len(evidence)} sentences it read"
    return rng.choice(_STANCES), "the evidence it read names no one"


def _majority(answers: dict[str, str]) -> str | None:
    """The most common answer of a round (the first given, on a tie)."""
    if not answers:
        return None
    counts = Counter(answers.values())
    top = max(counts.values())
    return next(a for a in answers.values() if counts[a] == top)


def _self(instruction: str) -> str:
    found = _SELF.search(instruction)
    return found.group(1) if found else ""


def _split(document: str) -> tuple[str, list[dict[str, str]]]:
    """The case (question and evidence), and each earlier round's answers by debater."""
    case, _, rest = document.partition(HISTORY_HEADER)
    rounds: list[dict[str, str]] = []
    for line in rest.splitlines():
        if _ROUND.match(line.strip()):
            rounds.append({})
        elif rounds and (turn := _TURN.match(line.strip())):
            rounds[-1][turn.group(1)] = turn.group(2)
    return case, rounds


def _question(case: str) -> str:
    for line in case.splitlines():
        if line.startswith("Question:"):
            return line.removeprefix("Question:").strip()
    return case.strip().splitlines()[0] if case.strip() else ""


def _evidence(case: str) -> list[str]:
    _, _, body = case.partition("Evidence:")
    return sim.sentences(re.sub(r"^\[[\w.-]+\]\s*", "", body, flags=re.MULTILINE))


def _rng(*parts: str) -> random.Random:
    # hashlib, not hash(): str hashes are salted per process, and workers are many processes.
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))
