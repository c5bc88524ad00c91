"""The debate pattern on real workers: rounds in parallel, early consensus, quorum, budget."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from fleetline.shared import otel
from fleetline.shared.debate_budget import round_bound
from fleetline.shared.schemas import JobResult, JobStatus, OutcomeStatus
from tests.integration.conftest import ROOT, FleetFactory, RunningFleet
from tests.integration.trace_checks import assert_one_tree

pytestmark = pytest.mark.integration

SAMPLE = json.loads((ROOT / "ops" / "samples" / "debate.json").read_text())
PANEL = "tests.integration.debate_fleet:fleet"


@pytest.fixture
def debates(start_fleet: FleetFactory) -> RunningFleet:
    return start_fleet(worker_types=["debater", "judge"], with_beat=False)


def _debate(fleet: RunningFleet, **changes: Any) -> JobResult:
    spec = {**SAMPLE, "input": {**SAMPLE["input"], **changes}}
    return fleet.wait(fleet.producer.submit(spec).job_id)


def test_a_debate_that_converges_stops_early_and_says_so(debates: RunningFleet) -> None:
    job = _debate(debates)
    assert job.status is JobStatus.SUCCEEDED, debates.logs()
    result = job.result or {}
    assert result["stopped_early"] is True and result["stop"] == "consensus"
    assert result["consensus"] is True
    assert 1 <= result["rounds"] < SAMPLE["input"]["max_rounds"]
    assert len(result["history"]) == len(result["agreement"]) == result["rounds"]
    assert result["agreement"][-1] >= SAMPLE["input"]["threshold"]
    assert all(a < SAMPLE["input"]["threshold"] for a in result["agreement"][:-1])
    final = {answers["answer"] for answers in result["history"][-1].values()}
    assert final == {result["answer"]["answer"]}
    # Every agent answered in every round, then the judge once.
    ids = sorted(o.subtask_id for o in job.subtasks)
    expected = [f"debater-{n}:r{r}" for n in (1, 2, 3) for r in range(1, result["rounds"] + 1)]
    assert ids == sorted([*expected, "judge"])
    actions = [e.action for e in debates.store.audit(job.job_id)]
    assert actions.count("round_closed") == result["rounds"]
    assert actions.count("judging") == 1 and actions.count("finalised") == 1
    # Every turn and the judge are spans of the job's one trace.
    spans = assert_one_tree(debates, job)
    assert {s["attributes"].get(otel.STEP_ID) for s in spans} >= set(ids)


def test_a_threshold_above_one_runs_every_round(debates: RunningFleet) -> None:
    job = _debate(debates, threshold=1.5, max_rounds=3)
    assert job.status is JobStatus.SUCCEEDED, debates.logs()
    result = job.result or {}
    assert result["rounds"] == 3 and len(result["history"]) == 3
    assert result["stopped_early"] is False and result["stop"] == "max_rounds"
    # The agents did agree: consensus is reported, it only stopped nothing early.
    assert result["agreement"][-1] == 1.0 and result["consensus"] is True
    assert len(job.subtasks) == 3 * 3 + 1


def test_a_debate_that_cannot_afford_another_round_goes_to_its_judge_degraded(
    debates: RunningFleet,
) -> None:
    plan = debates.settings.fleet.plan("debate", {**SAMPLE["input"], "threshold": 1.5})
    first_round, _ = round_bound(debates.settings, plan, [])
    spec = {
        **SAMPLE,
        "budget_usd": first_round * 1.05,
        "input": {**SAMPLE["input"], "threshold": 1.5},
    }
    job = debates.wait(debates.producer.submit(spec).job_id)
    result = job.result or {}
    assert job.status is JobStatus.DEGRADED, debates.logs()
    assert result["stop"] == "budget" and result["rounds"] < SAMPLE["input"]["max_rounds"]
    assert result["answer"] is not None
    assert job.cost_usd <= spec["budget_usd"]


def test_a_round_whose_agents_partly_fail_goes_on_with_the_answers_it_has(
    start_fleet: FleetFactory, tmp_path: Path
) -> None:
    (tmp_path / "outage").write_text("sim-large\n")
    fleet = start_fleet(
        with_beat=False, FLEETLINE_APP=PANEL, FLEETLINE_SIM_OUTAGE_FILE=str(tmp_path / "outage")
    )
    spec = {"kind": "panel", "input": {"question": "Ship it?"}, "deadline_s": 20}
    job = fleet.wait(fleet.producer.submit(spec).job_id)
    result = job.result or {}
    assert job.status is JobStatus.DEGRADED, fleet.logs()
    # `third` never answered; the check counted the two that did.
    assert [sorted(r) for r in result["history"]] == [["con", "pro"], ["con", "pro"]]
    assert result["agreement"] == [0.0, 1.0] and result["stop"] == "consensus"
    assert result["answer"] == {"answer": "yes"}
    failed = {o.subtask_id: o.status for o in job.subtasks if o.worker_type == "third"}
    assert failed == {"third:r1": OutcomeStatus.FAILED, "third:r2": OutcomeStatus.FAILED}


def test_a_quorum_closes_a_round_without_waiting_for_the_straggler(
    start_fleet: FleetFactory,
) -> None:
    fleet = start_fleet(
        with_beat=False,
        FLEETLINE_APP=PANEL,
        FLEETLINE_SIM_STALL_TYPES="third",
        FLEETLINE_SIM_STALL_MS="2000",
    )
    spec = {
        "kind": "panel",
        "input": {"question": "Ship it?", "quorum": 2, "max_rounds": 1},
        "deadline_s": 20,
    }
    job = fleet.wait(fleet.producer.submit(spec).job_id)
    assert job.status is JobStatus.SUCCEEDED, fleet.logs()
    result = job.result or {}
    assert [sorted(r) for r in result["history"]] == [["con", "pro"]]
    # The straggler's outcome is recorded after the job ended, and not used.
    deadline = time.monotonic() + 20
    while "third:r1" not in fleet.store.outcomes(job.job_id):
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.1)
    assert fleet.store.outcomes(job.job_id)["third:r1"].status is OutcomeStatus.TIMED_OUT
    audit = fleet.store.audit(job.job_id)
    order = [e.fields.get("subtask") or e.action for e in audit]
    assert order.index("finalised") < order.index("third:r1")


def test_a_debate_where_no_agent_answers_fails_without_asking_its_judge(
    start_fleet: FleetFactory, tmp_path: Path
) -> None:
    (tmp_path / "outage").write_text("sim-small\nsim-large\n")
    fleet = start_fleet(
        with_beat=False,
        FLEETLINE_APP=PANEL,
        FLEETLINE_SIM_OUTAGE_FILE=str(tmp_path / "outage"),
        FLEETLINE_WORKERS__PRO__MAX_RETRIES="0",
        FLEETLINE_WORKERS__CON__MAX_RETRIES="0",
    )
    spec = {"kind": "panel", "input": {"question": "Ship it?"}, "deadline_s": 20}
    job = fleet.wait(fleet.producer.submit(spec).job_id)
    result = job.result or {}
    assert job.status is JobStatus.FAILED, fleet.logs()
    assert result["stop"] == "no_answers" and result["history"] == [{}]
    assert result["answer"] is None
    assert "verdict" not in {o.subtask_id for o in job.subtasks}
