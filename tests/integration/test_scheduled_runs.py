"""Batch runs with real workers: a folder becomes one job, a slot runs once, bad lines skip."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from fleetline.producer.cli import app as cli
from fleetline.producer.scheduled_runs import run_scheduled
from fleetline.shared import keys
from fleetline.shared.names import TASK_SCHEDULED_RUN
from fleetline.shared.schemas import JobStatus
from fleetline.shared.settings import get_settings
from tests.integration.conftest import FleetFactory

pytestmark = pytest.mark.integration

runner = CliRunner()


def schedule_env(**runs: dict[str, Any]) -> dict[str, str]:
    defaults = {
        "cron": "0 2 * * *",
        "tenant": "scheduled",
        "budget_usd": 1,
        "latency_profile": "interactive",
        "deadline_s": 30,
    }
    return {
        "FLEETLINE_SCHEDULE_RUNS": json.dumps({n: {**defaults, **r} for n, r in runs.items()}),
        "FLEETLINE_SIM_LATENCY_MS": "5",
    }


def audit(client: redis.Redis, name: str) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in client.xrange(keys.schedule_audit(name))
    ]


def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "q3 report.txt").write_text("Acme Corp grew revenue 12% in Q3. Bank stocks rose.")
    (docs / "memo.md").write_text("# Memo\nAcme Corp plans to hire 40 engineers in 2026.")
    (docs / "notes.txt").write_text("Globex lost 3% of its market share to Acme Corp.")
    return docs


def test_a_folder_schedule_runs_one_job_once_per_slot(
    start_fleet: FleetFactory, redis_client: redis.Redis, tmp_path: Path
) -> None:
    docs = folder(tmp_path)
    fleet = start_fleet(
        with_beat=False,
        **schedule_env(docs={"source": "folder", "path": str(docs), "question": "How is Acme?"}),
    )
    get_settings.cache_clear()

    first = runner.invoke(cli, ["schedule", "run", "docs", "--json"])

    assert first.exit_code == 0, first.output + fleet.logs()
    summary = json.loads(first.stdout)
    assert (summary["jobs"], summary["submitted"], summary["succeeded"]) == (1, 1, 1)
    assert summary["skipped"] == [] and summary["cost_usd"] > 0
    job = fleet.store.get(summary["job_ids"][0])
    assert job.status is JobStatus.SUCCEEDED and job.tenant == "scheduled"
    extracted = sorted(o.subtask_id for o in job.subtasks if o.worker_type == "extraction")
    assert extracted == ["extract-memo", "extract-notes", "extract-q3-report"]
    progress = redis_client.hgetall(keys.scheduled_run("docs", summary["run_id"]))
    assert progress[b"status"] == b"done" and progress[b"succeeded"] == b"1"
    assert (
        0
        < redis_client.ttl(keys.scheduled_run("docs", summary["run_id"]))
        <= keys.SCHEDULED_RUN_TTL_S
    )

    again = runner.invoke(cli, ["schedule", "run", "docs", "--json"])

    assert again.exit_code == 0, again.output
    repeat = json.loads(again.stdout)
    assert repeat["run_id"] == summary["run_id"]
    assert (repeat["submitted"], repeat["reused"]) == (0, 1), "the same slot submits nothing"
    assert repeat["job_ids"] == summary["job_ids"]
    trail = audit(redis_client, "docs")
    assert [(e["submitted"], e["succeeded"]) for e in trail] == [("1", "1"), ("0", "1")]
    assert float(trail[0]["cost_usd"]) == pytest.approx(job.cost_usd)

    table = runner.invoke(cli, ["schedule", "run", "docs", "--run-id", "rerun-1"])
    assert table.exit_code == 0, table.output
    assert "rerun-1" in table.stdout and len(audit(redis_client, "docs")) == 3


def test_a_jsonl_schedule_skips_bad_lines_with_their_number_and_runs_the_rest(
    start_fleet: FleetFactory, redis_client: redis.Redis, tmp_path: Path
) -> None:
    def line(question: str, **change: object) -> str:
        doc = {"id": "d1", "text": "Acme Corp grew revenue 12% in 2025."}
        spec = {"input": {"question": question, "documents": [doc]}, **change}
        return json.dumps(spec)

    path = tmp_path / "jobs.jsonl"
    bad = json.dumps({"input": {"question": "Where are the documents?"}})
    path.write_text("\n".join([line("How did Acme grow?"), bad, line("What grew?"), "{oops"]))
    fleet = start_fleet(
        with_beat=False, **schedule_env(lines={"source": "jsonl", "path": str(path)})
    )
    seen: list[tuple[int, int]] = []

    summary = run_scheduled(
        "lines", fleet.settings, fleet.producer, fleet.store, progress=lambda *p: seen.append(p)
    )

    assert (summary.jobs, summary.submitted, summary.succeeded) == (2, 2, 2), fleet.logs()
    assert [(s.line, s.reason) for s in summary.skipped] == [
        (2, "invalid job spec: input.documents: Field required"),
        (4, "not valid JSON: Expecting property name enclosed in double quotes"),
    ]
    assert not summary.ok
    assert seen[0] == (0, 2) and seen[-1] == (2, 2)
    trail = audit(redis_client, "lines")
    assert len(trail) == 1
    assert [s["line"] for s in json.loads(trail[0]["skipped"])] == [2, 4]
    assert redis_client.hget(keys.scheduled_run("lines", summary.run_id), "status") == b"done"

    get_settings.cache_clear()
    cli_run = runner.invoke(cli, ["schedule", "run", "lines"])
    assert cli_run.exit_code == 1, "a skipped line fails the run"
    assert "skipped line 2" in cli_run.stdout


def test_the_scheduled_task_runs_the_schedule_and_a_duplicate_trigger_submits_nothing(
    start_fleet: FleetFactory, redis_client: redis.Redis, tmp_path: Path
) -> None:
    docs = folder(tmp_path)
    fleet = start_fleet(
        **schedule_env(docs={"source": "folder", "path": str(docs), "question": "How is Acme?"})
    )
    # What beat sends at the slot, twice (a duplicate trigger).
    fleet.producer.app.send_task(TASK_SCHEDULED_RUN, args=("docs",))
    fleet.producer.app.send_task(TASK_SCHEDULED_RUN, args=("docs",))

    deadline = time.monotonic() + 30
    while len(audit(redis_client, "docs")) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    trail = audit(redis_client, "docs")
    assert len(trail) == 2, fleet.logs()
    assert sorted(e["submitted"] for e in trail) == ["0", "1"]
    assert {e["job_ids"] for e in trail} == {trail[0]["job_ids"]}, "both runs saw the same job"
    assert all(e["succeeded"] == "1" for e in trail)
    # Beat holds the run's crontab entry (it fires at 02:00 UTC).
    assert fleet.fleet.alive()["beat"], fleet.logs()
    entry = "fl:redbeat:schedule-docs"  # RedBeat joins prefix and name with nothing
    assert redis_client.zscore("fl:redbeat::schedule", entry) is not None


def test_an_unknown_schedule_exits_2_naming_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in schedule_env(nightly={"source": "jsonl", "path": "/nowhere"}).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()

    result = runner.invoke(cli, ["schedule", "run", "weekly"])

    assert result.exit_code == 2
    assert "no scheduled run 'weekly' (known: nightly)" in result.stderr
