"""A tool step's call: the tool's function, through its fleet-wide breaker, in its time.

A thread cannot be killed, so the function runs on a helper thread and the step stops
waiting for it at its timeout (the smaller of the tool's `max_call_s` and what is left of
the deadline): the step is recorded `timed_out` and the thread is abandoned. On prefork,
Celery's hard time limit remains the backstop for a function that never returns.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from fleetline.shared.breakers import BreakerOpen
from fleetline.shared.errors import PermanentToolError, RetryableToolError, ToolTimeout
from fleetline.shared.fleet import Tool
from fleetline.shared.schemas import OutcomeStatus, SubtaskOutcome
from fleetline.shared.settings import SimSettings

if TYPE_CHECKING:
    from fleetline.workers.run import SubtaskRun


def call_tool(run: SubtaskRun, tool: Tool) -> SubtaskOutcome:
    """Run `tool` on the step's arguments and return the step's outcome.

    Raises RetryableToolError (a `retry_on` exception, or the timeout) for the task's
    retry policy; any other exception of the tool ends the step `failed` at once.
    """
    args = dict(run.payload.subtask.args or {})
    timeout_s = run.call_timeout_s()
    breaker = run.runtime.tool_breaker(tool.name)
    try:
        result = breaker.call(_invoke, tool, args, timeout_s, run.runtime.settings.sim)
    except BreakerOpen as exc:
        return run.outcome(OutcomeStatus.CIRCUIT_OPEN, "circuit_open", str(exc))
    except PermanentToolError as exc:
        return run.outcome(OutcomeStatus.FAILED, exc.category, str(exc))
    problem = _invalid(tool, result)
    if problem:
        return run.outcome(OutcomeStatus.INVALID_OUTPUT, "invalid_output", problem)
    return run.outcome(OutcomeStatus.OK, output=result)


def _invoke(tool: Tool, args: dict[str, Any], timeout_s: float, sim: SimSettings) -> Any:
    """The function's result; its exceptions as the step errors they mean."""
    _injected_fault(tool.name, args, timeout_s, sim)
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["result"] = tool.fn(args)
        except BaseException as exc:
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=f"tool-{tool.name}", daemon=True).start()
    if not done.wait(timeout_s):
        raise ToolTimeout(f"tool {tool.name} gave no result within {timeout_s:.3g}s")
    error = box.get("error")
    if error is None:
        return box["result"]
    if isinstance(error, RetryableToolError | PermanentToolError):
        raise error
    message = f"{type(error).__name__}: {error}"[:500]
    if isinstance(error, tool.retry_on):
        raise RetryableToolError(message) from error
    raise PermanentToolError(message) from error


def _invalid(tool: Tool, result: Any) -> str:
    """Why a tool's result cannot be a step's output ("" when it can)."""
    if not isinstance(result, dict):
        return f"tool {tool.name} returned {type(result).__name__}, not a dict"
    try:
        # Outcomes travel and are stored as JSON: anything else would fail later, far away.
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"tool {tool.name} returned a result that is not JSON: {exc}"
    if tool.output is not None:
        try:
            tool.output.model_validate(result)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "output"
            return f"{where}: {first['msg']}"
    return ""


def _injected_fault(name: str, args: dict[str, Any], timeout_s: float, sim: SimSettings) -> None:
    """The sim's fault injection, by tool name, as for agents: stall, crash, outage."""
    if name in sim.stalled:
        time.sleep(min(sim.stall_ms / 1000, timeout_s))
        raise ToolTimeout(f"sim: tool {name} is stalled")
    if sim.crash_marker and sim.crashes(name, json.dumps(args, default=str)):
        os.kill(os.getpid(), signal.SIGKILL)
    if sim.down(name):
        raise RetryableToolError(f"sim: tool {name} is down (outage file)")
