"""A debate of three agents for the round tests: `pro` and `third` say yes, `con` says no
until it has seen a round; `third` runs on the reasoning tier (an outage file can take it
down) and the judge on the long-context one."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from fleetline import Fleet, Plan, debate


class Answer(BaseModel):
    answer: str = Field(min_length=1)


class Question(BaseModel):
    question: str
    max_rounds: int = 3
    threshold: float = 0.8
    quorum: int | None = None


fleet = Fleet("panel")


def _yes(instruction: str, document: str) -> dict[str, Any]:
    return {"answer": "yes"}


def _no_then_yes(instruction: str, document: str) -> dict[str, Any]:
    return {"answer": "yes" if "Round 1:" in document else "no"}


def _majority(instruction: str, document: str) -> dict[str, Any]:
    answers = [line.rsplit(": ", 1)[-1] for line in document.splitlines() if line.startswith("- ")]
    return {"answer": max(set(answers), key=answers.count) if answers else "none"}


pro = fleet.agent("pro", tier="cheap", output=Answer, prompt="Argue.", sim=_yes)
con = fleet.agent("con", tier="cheap", output=Answer, prompt="Argue.", sim=_no_then_yes)
third = fleet.agent(
    "third", tier="reasoning", output=Answer, prompt="Argue.", sim=_yes, max_retries=0
)
judge = fleet.agent("verdict", tier="long_context", output=Answer, prompt="Judge.", sim=_majority)


@fleet.job("panel", input=Question)
def panel(q: Question) -> Plan:
    agents = [a.step(id=a.name, text=q.question) for a in (pro, con, third)]
    return debate(
        agents,
        judge=judge.step(id="verdict", text=q.question),
        max_rounds=q.max_rounds,
        threshold=q.threshold,
        quorum=q.quorum,
    )
