"""A fleet whose tool does everything that leaks text into Sentry: it logs its input as a
log argument (a breadcrumb, then an error event), puts it in an exception's message, and
fails with a secret of the process in the message too."""

from __future__ import annotations

import logging
import os
from typing import Any

from pydantic import BaseModel, Field

from fleetline import Fleet, Plan, fan_out

log = logging.getLogger("leaky")


class Report(BaseModel):
    summary: str = Field(min_length=1)


class LeakyJob(BaseModel):
    text: str
    prompt: str


fleet = Fleet("leaky")
report = fleet.agent("report", tier="cheap", output=Report, prompt="Report on the results.")


@fleet.tool("leaky", max_retries=0)
def leaky(args: dict[str, Any]) -> dict[str, Any]:
    secret = os.environ["PAYMENTS_API_KEY"]
    log.warning("reading %s for %s", args["text"], args["prompt"])
    try:
        raise ValueError(f"cannot parse {args['text']!r} (prompt {args['prompt']}, key {secret})")
    except ValueError:
        log.exception("lookup failed for %s with key %s", args["text"], secret)
    raise RuntimeError(f"gave up on {args['text']} using {secret}")


@fleet.job("leaky_job", input=LeakyJob)
def leaky_job(inp: LeakyJob) -> Plan:
    step = leaky.step(id="leak", args={"text": inp.text, "prompt": inp.prompt})
    return fan_out([step], then=report.step(id="report"))
