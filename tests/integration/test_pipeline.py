"""The pipeline pattern on real workers: stages in order, checkpoints, a failed stage, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fleetline.producer.cli import app as cli
from fleetline.shared import otel
from fleetline.shared.pipeline_state import PipelineStore, parse_table, resumed_table
from fleetline.shared.round_trip import RoundTrip
from fleetline.shared.schemas import JobResult, JobStatus
from tests.integration.conftest import ROOT, FleetFactory, RunningFleet
from tests.integration.trace_checks import assert_one_tree

pytestmark = pytest.mark.integration

runner = CliRunner()
SPEC = json.loads((ROOT / "ops" / "samples" / "document_pipeline.json").read_text())
WORKERS = ["extraction", "entity_lookup", "analysis", "synthesis"]
# The analysis agent's model: the outage file names it to fail the analyse stage.
ANALYSIS_MODEL = "sim-large"


@pytest.fixture
def pipelines(start_fleet: FleetFactory, tmp_path: Path) -> RunningFleet:
    return start_fleet(
        worker_types=WORKERS,
        with_beat=False,
        FLEETLINE_SIM_CALL_LOG=str(tmp_path / "calls.jsonl"),
        FLEETLINE_SIM_OUTAGE_FILE=str(tmp_path / "outage"),
        FLEETLINE_EXAMPLES_LOOKUP_LOG=str(tmp_path / "lookups.jsonl"),
        # Retries of the failing stage come quickly.
        FLEETLINE_WORKERS__ANALYSIS__RETRY_BACKOFF_S="0.05",
        FLEETLINE_WORKERS__ANALYSIS__MAX_RETRIES="1",
    )


def _calls(tmp_path: Path, job_id: str, worker_type: str) -> int:
    log = tmp_path / "calls.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    return sum(
        1
        for line in lines
        if (c := json.loads(line))["job_id"] == job_id and c["worker_type"] == worker_type
    )


def _lookups(tmp_path: Path) -> int:
    log = tmp_path / "lookups.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def _stages(job: JobResult) -> dict[str, dict[str, Any]]:
    assert job.result is not None
    return {s["name"]: s for s in job.result["stages"]}


def _cli(*args: str) -> Any:
    return runner.invoke(cli, list(args))


def _failed_at_analyse(fleet: RunningFleet, tmp_path: Path) -> JobResult:
    (tmp_path / "outage").write_text(ANALYSIS_MODEL + "\n")
    job = fleet.wait(fleet.producer.submit(SPEC).job_id)
    assert job.status is JobStatus.FAILED, fleet.logs()
    return job


def test_a_pipeline_failed_at_analyse_resumes_without_running_its_first_stages_again(
    pipelines: RunningFleet, tmp_path: Path
) -> None:
    job = _failed_at_analyse(pipelines, tmp_path)
    assert job.result is not None and job.result["failed_stage"] == "analyse"
    assert job.result["error"]["category"] == "server_error"
    stages = _stages(job)
    assert [s["name"] for s in job.result["stages"]] == [
        "extract",
        "enrich",
        "analyse",
        "synthesise",
    ]
    assert stages["extract"]["status"] == stages["enrich"]["status"] == "ok"
    assert stages["extract"]["agent"] == "extraction"
    assert stages["enrich"]["agent"] == "entity_lookup"
    assert stages["analyse"]["status"] == "failed" and stages["analyse"]["attempts"] == 2
    assert stages["analyse"]["checkpoint_version"] is None
    assert stages["synthesise"]["status"] == "pending"
    extract_version = stages["extract"]["checkpoint_version"]
    assert 0 < extract_version < stages["enrich"]["checkpoint_version"]
    # Checkpoints kept: the resume reads the enrich stage's.
    kept = PipelineStore(pipelines.store.client, 60).checkpoints(job.job_id)
    assert set(kept) == {"extract", "enrich"}
    assert kept["enrich"]["gist"] and kept["enrich"]["entities"]
    extracted = _calls(tmp_path, job.job_id, "extraction")
    assert extracted == 1 and _lookups(tmp_path) == 1
    cost_before = job.cost_usd

    (tmp_path / "outage").unlink()
    resumed = _cli("resume", job.job_id, "--wait", "--json")
    assert resumed.exit_code == 0, resumed.output + pipelines.logs()
    job = pipelines.wait(job.job_id)
    assert job.status is JobStatus.SUCCEEDED, pipelines.logs()
    assert job.result is not None and job.result["run"] == 2
    assert job.result["answer"]["brief"]
    stages = _stages(job)
    assert {n: (s["status"], s["run"]) for n, s in stages.items()} == {
        "extract": ("ok", 1),
        "enrich": ("ok", 1),
        "analyse": ("ok", 2),
        "synthesise": ("ok", 2),
    }
    assert stages["extract"]["checkpoint_version"] == extract_version
    # No new call of the extract stage's agent, and the lookup ran once in all.
    assert _calls(tmp_path, job.job_id, "extraction") == extracted
    assert _lookups(tmp_path) == 1
    # Charged once per call: the first run's cost plus the second run's stages.
    second = stages["analyse"]["cost_usd"] + stages["synthesise"]["cost_usd"]
    assert job.cost_usd == pytest.approx(cost_before + second)
    assert job.cost_usd == pytest.approx(sum(o.cost_usd for o in job.subtasks))
    assert job.result["runs"][0]["status"] == "failed"
    actions = [e.action for e in pipelines.store.audit(job.job_id)]
    assert actions.count("resumed") == 1 and actions.count("finalised") == 2
    assert actions.count("checkpointed") == 4 and actions.count("stage_failed") == 1
    # Both runs' stages are spans of the job's one trace (the resume continued it).
    spans = assert_one_tree(pipelines, job)
    names = {s["attributes"].get(otel.STEP_ID): s["name"] for s in spans}
    assert names["analyse:r2"] == "invoke_agent analysis"
    assert names["enrich"] == "execute_tool entity_lookup"

    # A succeeded job runs again only from a named stage.
    refused = _cli("resume", job.job_id)
    assert refused.exit_code == 2 and "--from" in refused.stderr


def test_two_concurrent_resumes_start_one_run(pipelines: RunningFleet, tmp_path: Path) -> None:
    job = _failed_at_analyse(pipelines, tmp_path)
    (tmp_path / "outage").unlink()
    fleetline = str(Path(sys.executable).with_name("fleetline"))
    env = {**os.environ, **pipelines.env, "FLEETLINE_REDIS_URL": pipelines.settings.redis.url or ""}
    both = [
        subprocess.Popen(
            [fleetline, "resume", job.job_id],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in both]
    results = [(p.returncode, err) for p, (_, err) in zip(both, outputs, strict=True)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    # Whichever came second: it lost the compare-and-set, or found run 2 running or done.
    reasons = ("changed while resuming", "is still running (run 2)", "succeeded")
    assert any(r in loser for r in reasons), loser
    job = pipelines.wait(job.job_id)
    assert job.status is JobStatus.SUCCEEDED
    assert job.result is not None and job.result["run"] == 2
    audit = pipelines.store.audit(job.job_id)
    assert [e.action for e in audit].count("resumed") == 1
    # Each stage of the second run ran once.
    assert _calls(tmp_path, job.job_id, "synthesis") == 1

    # At the compare-and-set itself: two resumes that read the same version start one run.
    record = pipelines.store.raw(job.job_id)
    store = PipelineStore(pipelines.store.client, 60)
    fresh = resumed_table(parse_table(record["stages"]), 3, 3, None)
    version = int(record["version"])
    first = store.resume(job.job_id, version, 3, fresh, {"run": 3}, 1e10, "t", None, [])
    second = store.resume(job.job_id, version, 3, fresh, {"run": 3}, 1e10, "t", None, [])
    assert first[0] == 1 and second[0] == -1
    # A late stage of run 2 never ends run 3; run 3's own end does, once.
    assert not _finalize(pipelines, job.job_id, run=2)
    assert _finalize(pipelines, job.job_id, run=3)
    assert not _finalize(pipelines, job.job_id, run=3)


def _finalize(fleet: RunningFleet, job_id: str, run: int) -> bool:
    trip = RoundTrip(fleet.store.client)
    index = fleet.store.queue_finalize(trip, job_id, JobStatus.FAILED, 0.0, {}, "t", run=run)
    return fleet.store.finalized(trip.execute()[index])


def test_a_resume_on_another_model_runs_from_that_stage_and_diff_shows_both_runs(
    pipelines: RunningFleet, tmp_path: Path
) -> None:
    job = pipelines.wait(pipelines.producer.submit(SPEC).job_id)
    assert job.status is JobStatus.SUCCEEDED, pipelines.logs()
    before = _stages(job)
    refused = _cli("resume", job.job_id, "--from", "enrich", "--model", "sim-small")
    assert refused.exit_code == 2 and "tool" in refused.stderr
    again = _cli("resume", job.job_id, "--from", "analyse", "--model", "sim-small", "--wait")
    assert again.exit_code == 0, again.output
    job = pipelines.wait(job.job_id)
    after = _stages(job)
    assert after["analyse"]["model"] == "sim-small" and before["analyse"]["model"] == "sim-large"
    assert after["extract"] == before["extract"] and after["enrich"] == before["enrich"]
    assert _calls(tmp_path, job.job_id, "analysis") == 2

    shown = _cli("diff", job.job_id, "--json")
    assert shown.exit_code == 0, shown.output
    diff = json.loads(shown.stdout)
    assert diff["runs"] == [1, 2]
    rows = {row["name"]: row for row in diff["stages"]}
    assert not rows["extract"]["rerun"] and rows["analyse"]["rerun"]
    analyse = rows["analyse"]
    assert analyse["before"]["model"] == "sim-large" and analyse["after"]["model"] == "sim-small"
    assert analyse["before"]["cost_usd"] > analyse["after"]["cost_usd"] > 0
    assert analyse["before"]["output"]["findings"] and analyse["after"]["output"]["findings"]
    table = _cli("diff", job.job_id)
    assert table.exit_code == 0 and "sim-small" in table.stdout


def test_a_stage_whose_input_does_not_validate_fails_the_job_there_naming_the_field(
    start_fleet: FleetFactory,
) -> None:
    fleet = start_fleet(with_beat=False, FLEETLINE_APP="tests.integration.pipeline_fleet:fleet")
    spec = {"kind": "count_twice", "input": {"label": "three"}, "deadline_s": 20}
    job = fleet.wait(fleet.producer.submit(spec).job_id)
    assert job.status is JobStatus.FAILED
    assert job.result is not None and job.result["failed_stage"] == "double"
    error = job.result["error"]
    assert error["category"] == "invalid_input"
    assert "n: Input should be a valid integer" in error["message"]
    stages = _stages(job)
    assert stages["emit"]["status"] == "ok" and stages["double"]["status"] == "failed"
    assert stages["double"]["attempts"] == 1
