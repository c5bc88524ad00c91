"""The example debate: `debate`, a question argued by 2-7 agents over up to 5 rounds.

Every debater answers in each round from the question, the evidence and the rounds so
far; after each round the fleet checks, in plain code, how many agree with the first
answer, and stops early at `threshold` (above 1: never early). A judge on the reasoning
tier then writes the answer from the whole history.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fleetline import Plan, debate
from fleetline.examples import debate_sim
from fleetline.examples.research import MAX_DOCUMENT_CHARS, Document, fleet


class DebaterAnswer(BaseModel):
    """One debater's answer in one round."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    answer: str = Field(min_length=1, max_length=200)
    reasoning: str = Field(max_length=1_000)
    confidence: float = Field(ge=0, le=1)


class Verdict(BaseModel):
    """The judge's answer, and how well the debate supports it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    answer: str = Field(min_length=1, max_length=200)
    rationale: str = Field(max_length=2_000)
    support: float = Field(ge=0, le=1)


class DebateInput(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    question: str = Field(min_length=3, max_length=2_000)
    documents: list[Document] = Field(default_factory=list, max_length=50)
    agents: int = Field(default=3, ge=2, le=7)
    max_rounds: int = Field(default=3, ge=1, le=5)
    threshold: float = Field(default=0.8, gt=0, le=2)
    # Answers that close a round (default: every debater's).
    quorum: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _quorum_fits(self) -> DebateInput:
        if self.quorum is not None and self.quorum > self.agents:
            raise ValueError(f"quorum {self.quorum} is more than the {self.agents} agents")
        if sum(len(d.text) for d in self.documents) > MAX_DOCUMENT_CHARS:
            raise ValueError(f"documents hold more than {MAX_DOCUMENT_CHARS} characters")
        return self


debater = fleet.agent(
    "debater",
    tier="cheap",
    output=DebaterAnswer,
    prompt=(
        "Task: debate. You are {goal}.\n"
        "Answer the question in a few words from the evidence, and say why. When earlier "
        "rounds are shown, weigh the other debaters' answers: keep yours or change it."
    ),
    sim=debate_sim.debater,
    max_output_tokens=200,
)
judge = fleet.agent(
    "judge",
    tier="reasoning",
    output=Verdict,
    prompt=(
        "Task: judge a debate.\n"
        "Read the question, the evidence and every round of the debate; give the answer "
        "the debate supports best, why, and how strongly it is supported (0-1)."
    ),
    sim=debate_sim.judge,
    max_output_tokens=300,
)


def case_text(inp: DebateInput) -> str:
    """The question and its evidence, as every debater and the judge read them."""
    evidence = "\n".join(f"[{d.id}] {d.text}" for d in inp.documents)
    return f"Question: {inp.question}" + (f"\n\nEvidence:\n{evidence}" if evidence else "")


@fleet.job("debate", input=DebateInput)
def debate_job(inp: DebateInput) -> Plan:
    """`agents` debaters in rounds, then the judge."""
    text = case_text(inp)
    agents = [
        debater.step(id=f"debater-{n}", goal=f"debater-{n}", text=text)
        for n in range(1, inp.agents + 1)
    ]
    return debate(
        agents,
        judge=judge.step(id="judge", text=text),
        max_rounds=inp.max_rounds,
        threshold=inp.threshold,
        quorum=inp.quorum,
    )
