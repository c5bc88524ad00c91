"""A pipeline of tools for the stage-input test: the second stage refuses the first's output."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from fleetline import Fleet, Plan, pipeline, stage


class Count(BaseModel):
    n: int


class CountInput(BaseModel):
    label: str


fleet = Fleet("stages")


@fleet.tool("emit", max_retries=0)
def emit(args: dict[str, Any]) -> dict[str, Any]:
    # Not a Count: `n` is a word, so the next stage's input check refuses it.
    return {"n": args["input"]["label"]}


@fleet.tool("double", max_retries=0)
def double(args: dict[str, Any]) -> dict[str, Any]:
    return {"n": 2 * args["input"]["n"]}


@fleet.job("count_twice", input=CountInput)
def count_twice(inp: CountInput) -> Plan:
    return pipeline([emit.step(id="emit"), stage(double.step(id="double"), validate_input=Count)])
