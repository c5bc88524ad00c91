"""The debate shape: agents answer in rounds, in parallel, until they agree; a judge decides.

    plan = debate(agents=[a.step("pro", text=q), b.step("con", text=q)],
                  judge=judge.step("judge", text=q), max_rounds=3, threshold=0.8)

Each round runs every agent on the question and the history of the rounds before it.
After a round, pure code checks for consensus: the share of the other answers that agree
with the first (`agree(a, b)`, lexical by default); at `threshold` the debate stops early.
A threshold above 1 is never reached, so every round runs. A round closes when `quorum`
answers are in (default: every agent's); one whose agents partly fail goes on with the
answers it has. Then the judge reads the whole history.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fleetline.shared.fleet.declarations import Agent
from fleetline.shared.fleet.plan import Plan, PlanError, Step

# Whether two agents' outputs give the same answer.
Agree = Callable[[dict[str, Any], dict[str, Any]], bool]

MAX_ROUNDS = 20
MAX_THRESHOLD = 2.0
# The share of their words two answers must have in common to agree lexically (Jaccard):
# "Paris." and "paris" agree, "Paris" and "Lyon, not Paris" do not.
LEXICAL_MATCH = 0.8
_WORD = re.compile(r"\w+")


class Stop(StrEnum):
    """Why a debate went to its judge."""

    CONSENSUS = "consensus"
    MAX_ROUNDS = "max_rounds"
    BUDGET = "budget"
    NO_ANSWERS = "no_answers"


def answer_text(output: dict[str, Any]) -> str:
    """What an agent answered: its output's `answer` field when that is text, else the
    whole output as JSON."""
    found = output.get("answer")
    if isinstance(found, str):
        return found
    return json.dumps(output, ensure_ascii=False, sort_keys=True)


def words(text: str) -> frozenset[str]:
    """An answer normalised for comparison: its words, case and accents folded."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return frozenset(_WORD.findall(plain))


def lexical_agree(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The default `agree`: the answers share at least LEXICAL_MATCH of their words."""
    left, right = words(answer_text(a)), words(answer_text(b))
    if not left or not right:
        return left == right
    return len(left & right) / len(left | right) >= LEXICAL_MATCH


def agreement(answers: Sequence[dict[str, Any]], agree: Agree = lexical_agree) -> float:
    """The share of the other answers that agree with the first (0.0 with fewer than two:
    a lone answer agrees with nobody)."""
    if len(answers) < 2:
        return 0.0
    first, others = answers[0], answers[1:]
    return round(sum(1 for other in others if agree(first, other)) / len(others), 4)


@dataclass(frozen=True)
class DebateRules:
    """How a debate runs: its rounds, when it stops early, and what closes a round."""

    max_rounds: int
    threshold: float
    quorum: int
    agree: Agree = lexical_agree

    def stop(self, round_no: int, agreed: float, answered: int) -> Stop | None:
        """Why the debate stops after round `round_no`, or None to run another."""
        if answered == 0:
            return Stop.NO_ANSWERS
        if agreed >= self.threshold:
            return Stop.CONSENSUS
        if round_no >= self.max_rounds:
            return Stop.MAX_ROUNDS
        return None

    def consensus(self, agreed: float) -> bool:
        """Whether the agents agreed (a threshold above 1 only stops nothing early)."""
        return agreed >= min(self.threshold, 1.0)


def debate(
    agents: Sequence[Step],
    judge: Step,
    *,
    max_rounds: int = 3,
    threshold: float = 0.8,
    quorum: int | None = None,
    agree: Agree | None = None,
) -> Plan:
    """Run `agents` in rounds until they agree or `max_rounds` have run, then `judge`.

    Args:
        agents: one agent step per participant (at least two); each round reads its text
            and the history.
        judge: the agent step that writes the answer from the question and the history.
        max_rounds: the most rounds (1 to MAX_ROUNDS).
        threshold: the agreement (0 to 1) that stops the debate early, in (0, 2]; above 1
            the debate runs every round.
        quorum: answers that close a round (default: every agent's); the stragglers'
            outcomes are recorded, not waited for.
        agree: whether two outputs agree (default: lexical_agree).

    Raises:
        PlanError: naming the argument out of range.
    """
    steps = tuple(agents)
    if len(steps) < 2:
        raise PlanError("a debate needs at least two agents")
    for step in (*steps, judge):
        if not isinstance(step, Step) or not isinstance(step.worker, Agent):
            raise PlanError("a debate's agents and judge are agent steps (agent.step(...))")
    if not 1 <= max_rounds <= MAX_ROUNDS:
        raise PlanError(f"max_rounds: {max_rounds} is not between 1 and {MAX_ROUNDS}")
    if not 0 < threshold <= MAX_THRESHOLD:
        raise PlanError(f"threshold: {threshold} is not in (0, {MAX_THRESHOLD:g}]")
    if quorum is not None and not 1 <= quorum <= len(steps):
        raise PlanError(f"quorum: {quorum} is not between 1 and {len(steps)} (the agents)")
    rules = DebateRules(max_rounds, threshold, quorum or len(steps), agree or lexical_agree)
    return Plan(steps=steps, then=judge, shape="debate", rules=rules)


def round_step_id(step_id: str, round_no: int) -> str:
    """The step id of an agent's turn in a round."""
    return f"{step_id}:r{round_no}"


History = list[dict[str, dict[str, Any]]]


def history_text(history: History) -> str:
    """The earlier rounds as an agent reads them: each round's answers by agent."""
    if not history:
        return ""
    lines = ["Earlier rounds of the debate:"]
    for number, answers in enumerate(history, 1):
        lines.append(f"Round {number}:")
        lines += [f"- {agent}: {answer_text(output)}" for agent, output in answers.items()]
    return "\n".join(lines)


def turn_text(step: Step, history: History) -> str:
    """What an agent (or the judge) reads in a round: its step's text, then the history."""
    shown = history_text(history)
    if not shown:
        return step.text
    return f"{step.text}\n\n{shown}" if step.text else shown
