"""A fleet of tools for the tool tests: flaky, strict, slow and down, and an agent."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from fleetline import Fleet, Plan, fan_out


class Report(BaseModel):
    summary: str = Field(min_length=1)


class ToolJob(BaseModel):
    tool: str
    n: int = Field(default=1, ge=1, le=20)


fleet = Fleet("tools")
report = fleet.agent("report", tier="cheap", output=Report, prompt="Report on the results.")


def _attempts(key: str) -> int:
    """How many times this key was tried so far, across processes (one file per try)."""
    folder = Path(os.environ["TOOLS_STATE_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    tries = len(list(folder.glob(f"{key}.*")))
    (folder / f"{key}.{tries}").touch()
    return tries + 1


@fleet.tool("flaky", max_retries=3, retry_backoff_s=0.05)
def flaky(args: dict[str, Any]) -> dict[str, Any]:
    if _attempts(args["key"]) < 2:
        raise ConnectionError("catalogue unreachable")
    return {"ok": True, "key": args["key"]}


@fleet.tool("strict", max_retries=3)
def strict(args: dict[str, Any]) -> dict[str, Any]:
    _attempts(args["key"])
    raise ValueError(f"sku {args['key']!r} is not a catalogue sku")


@fleet.tool("slow", timeout_s=0.5, max_retries=0)
def slow(args: dict[str, Any]) -> dict[str, Any]:
    time.sleep(5)
    return {"late": True}


@fleet.tool("down", max_retries=0, concurrency=1)
def down(args: dict[str, Any]) -> dict[str, Any]:
    _attempts(args["key"])
    raise ConnectionError("the service is down")


@fleet.job("tool_job", input=ToolJob)
def tool_job(inp: ToolJob) -> Plan:
    tool = fleet.tools[inp.tool]
    steps = [tool.step(id=f"t-{i}", args={"key": f"{inp.tool}-{i}"}) for i in range(inp.n)]
    return fan_out(steps, then=report.step(id="report"))
