"""Tools on the fleet: plain Python steps under retries, time limits and a fleet-wide breaker."""

from __future__ import annotations

import json
from pathlib import Path

import pybreaker
import pytest
from typer.testing import CliRunner

from fleetline.producer.cli import app as cli
from fleetline.shared.breakers import FleetBreaker, RedisBreakers
from fleetline.shared.schemas import JobResult, JobStatus, OutcomeStatus, SubtaskOutcome
from tests.integration.conftest import FleetFactory, RunningFleet

pytestmark = pytest.mark.integration

APP = "tests.integration.tool_fleet:fleet"
runner = CliRunner()


@pytest.fixture
def tools(start_fleet: FleetFactory, tmp_path: Path) -> RunningFleet:
    return start_fleet(
        with_beat=False,
        FLEETLINE_APP=APP,
        TOOLS_STATE_DIR=str(tmp_path / "state"),
        FLEETLINE_BREAKER_MIN_CALLS="2",
        FLEETLINE_BREAKER_FAILURE_RATE="0.5",
    )


def _run(fleet: RunningFleet, tool: str, n: int = 1) -> JobResult:
    spec = {"kind": "tool_job", "input": {"tool": tool, "n": n}, "deadline_s": 20}
    return fleet.wait(fleet.producer.submit(spec).job_id)


def _step(job: JobResult, step_id: str = "t-0") -> SubtaskOutcome:
    return next(o for o in job.subtasks if o.subtask_id == step_id)


def _tries(tmp_path: Path, key: str) -> int:
    return len(list((tmp_path / "state").glob(f"{key}.*")))


def test_a_tool_whose_error_is_retryable_is_retried_and_succeeds(
    tools: RunningFleet, tmp_path: Path
) -> None:
    job = _run(tools, "flaky")
    step = _step(job)
    assert job.status is JobStatus.SUCCEEDED, tools.logs()
    assert step.status is OutcomeStatus.OK and step.output == {"ok": True, "key": "flaky-0"}
    assert step.attempts == 2 and _tries(tmp_path, "flaky-0") == 2
    assert step.cost_usd == 0 and step.model is None
    actions = [e.action for e in tools.store.audit(job.job_id)]
    assert actions.count("subtask_recorded") == 2 and actions[-1] == "finalised"


def test_a_tool_error_that_is_not_retryable_fails_the_step_at_once(
    tools: RunningFleet, tmp_path: Path
) -> None:
    job = _run(tools, "strict")
    step = _step(job)
    assert job.status is JobStatus.FAILED
    assert step.status is OutcomeStatus.FAILED and step.error is not None
    assert step.error.category == "tool_error"
    assert "ValueError: sku 'strict-0' is not a catalogue sku" in step.error.message
    assert step.attempts == 1 and _tries(tmp_path, "strict-0") == 1


def test_a_tool_past_its_timeout_ends_timed_out_without_waiting_for_it(
    tools: RunningFleet,
) -> None:
    job = _run(tools, "slow")
    step = _step(job)
    assert step.status is OutcomeStatus.TIMED_OUT and step.error is not None
    assert step.error.category == "timeout"
    assert step.latency_ms < 2_000, "the step stopped waiting at the tool's 0.5 s timeout"


def test_a_tool_breaker_is_fleet_wide_and_a_real_pybreaker(
    tools: RunningFleet, tmp_path: Path
) -> None:
    job = _run(tools, "down", n=5)
    statuses = [_step(job, f"t-{i}").status for i in range(5)]
    # Two failures open it (min_calls 2, rate 0.5); the rest never reach the service.
    assert statuses.count(OutcomeStatus.FAILED) == 2, statuses
    assert statuses.count(OutcomeStatus.CIRCUIT_OPEN) == 3, statuses
    tried = sum(_tries(tmp_path, f"down-{i}") for i in range(5))
    assert tried == 2

    shown = runner.invoke(cli, ["breakers", "--json", "--app", APP])
    assert shown.exit_code == 0, shown.output
    rows = {row["name"]: row for row in json.loads(shown.output)}
    assert rows["down:tool"]["state"] == "open"

    # The same breaker through pybreaker's API: state and listeners see the fleet's.
    seen: list[tuple[str, str]] = []

    class Listener(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: pybreaker.CircuitBreaker, old: object, new: object) -> None:
            seen.append((str(getattr(old, "name", old)), str(getattr(new, "name", new))))

    breakers = RedisBreakers(tools.producer.store.client, tools.settings.breaker)
    breaker = FleetBreaker(breakers, "down:tool", listeners=[Listener()])
    assert isinstance(breaker, pybreaker.CircuitBreaker)
    assert breaker.current_state == "open"
    with pytest.raises(pybreaker.CircuitBreakerError):
        breaker.call(lambda: None)
    breaker.close()
    assert ("open", "closed") in seen
    closed = runner.invoke(cli, ["breakers", "--json", "-A", APP])
    assert {r["name"]: r["state"] for r in json.loads(closed.output)}["down:tool"] == "closed"


def test_fault_injection_stalls_a_tool_by_name(start_fleet: FleetFactory, tmp_path: Path) -> None:
    fleet = start_fleet(
        with_beat=False,
        FLEETLINE_APP=APP,
        TOOLS_STATE_DIR=str(tmp_path / "state"),
        FLEETLINE_SIM_STALL_TYPES="flaky",
        FLEETLINE_WORKERS__FLAKY__MAX_CALL_S="0.3",
        FLEETLINE_WORKERS__FLAKY__MAX_RETRIES="0",
    )
    step = _step(_run(fleet, "flaky"))
    assert step.status is OutcomeStatus.TIMED_OUT and step.error is not None
    assert "stalled" in step.error.message
    assert _tries(tmp_path, "flaky-0") == 0, "a stalled tool's function is never called"
