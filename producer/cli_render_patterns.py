"""How the CLI shows a pipeline's stages and a debate's rounds, beside the usual result."""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType
from rich.table import Table

from fleetline.producer.cli_render import styled, usd
from fleetline.shared.fleet.debate import answer_text
from fleetline.shared.schemas import JobResult


def pattern_tables(job: JobResult) -> list[RenderableType]:
    """A pipeline's stage table, or a debate's rounds (nothing for a fan-out)."""
    result = job.result or {}
    found: list[RenderableType] = []
    if result.get("stages"):
        found.append(stage_table(result["stages"], result.get("run", 1)))
    if "history" in result:
        found.append(round_table(result))
    return found


def stage_table(stages: list[dict[str, Any]], run: int) -> Table:
    """One row per stage of the current run: who ran it, in which run, how it ended."""
    table = Table(title=f"Stages (run {run})", title_justify="left")
    for name in ("stage", "agent", "model", "run"):
        table.add_column(name)
    table.add_column("status")
    table.add_column("attempts", justify="right")
    table.add_column("cost", justify="right")
    table.add_column("checkpoint", justify="right")
    for s in stages:
        version = s.get("checkpoint_version")
        table.add_row(
            s["name"],
            s["agent"],
            s.get("model") or "-",
            str(s["run"]) + ("" if s["run"] == run else " (kept)"),
            styled(s["status"]),
            str(s["attempts"]),
            usd(s["cost_usd"]),
            f"v{version}" if version is not None else "-",
        )
    return table


def round_table(result: dict[str, Any]) -> Table:
    """One row per round: its agreement and each agent's answer."""
    history: list[dict[str, Any]] = result.get("history") or []
    agents = list(dict.fromkeys(a for answers in history for a in answers))
    table = Table(title="Rounds", title_justify="left")
    table.add_column("round", justify="right")
    table.add_column("agreement", justify="right")
    for agent in agents:
        table.add_column(agent, overflow="fold")
    agreement = result.get("agreement") or []
    for number, answers in enumerate(history, 1):
        agreed = agreement[number - 1] if number <= len(agreement) else None
        table.add_row(
            str(number),
            f"{agreed:.0%}" if agreed is not None else "-",
            *(answer_text(answers[a]) if a in answers else "-" for a in agents),
        )
    stop = result.get("stop") or "running"
    early = "stopped early, " if result.get("stopped_early") else ""
    consensus = "consensus" if result.get("consensus") else "no consensus"
    table.caption = f"{early}{consensus} ({stop}) after {result.get('rounds', 0)} rounds"
    return table
