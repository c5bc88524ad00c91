"""A one-agent fleet for the budget tests: one extraction step, then a digest."""

from __future__ import annotations

from pydantic import BaseModel, Field

from fleetline import Fleet, Plan, fan_out


class Facts(BaseModel):
    facts: list[str] = Field(min_length=1)
    headline: str = Field(min_length=1)


class Digest(BaseModel):
    summary: str = Field(min_length=1)


class Text(BaseModel):
    text: str = Field(min_length=1)


fleet = Fleet("budget")
facts = fleet.agent("facts", tier="cheap", output=Facts, prompt="List the facts.", max_retries=0)
digest = fleet.agent("digest", tier="cheap", output=Digest, prompt="Summarise.", max_retries=0)


@fleet.job("facts_job", input=Text)
def facts_job(inp: Text) -> Plan:
    return fan_out([facts.step(id="facts", text=inp.text)], then=digest.step(id="digest"))
