"""Scheduled runs without Redis: settings, cron slots, and the jobs a source becomes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from celery.schedules import crontab

from fleetline.beat.enforcement import pausable_queues, paused_queues, queues_for
from fleetline.beat.schedule import build_schedule
from fleetline.producer.scheduled_runs import (
    RunSummary,
    Skipped,
    cron_slot,
    doc_id,
    load_jobs,
    slot_id,
)
from fleetline.shared.errors import ConfigError
from fleetline.shared.killswitch import SwitchState
from fleetline.shared.ledger import Window
from fleetline.shared.names import TASK_KILLSWITCH_CHECK, TASK_SCHEDULED_RUN
from fleetline.shared.scheduled import (
    ScheduledRun,
    ScheduleSettings,
    UnknownSchedule,
    cron_schedule,
    get_run,
)
from fleetline.shared.settings import FleetlineSettings, load_settings


def ts(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


def nightly(**change: object) -> dict[str, object]:
    return {
        "cron": "0 2 * * *",
        "source": "folder",
        "path": "/data/docs",
        "question": "What changed?",
        "tenant": "scheduled",
        "budget_usd": 5,
        **change,
    }


def test_runs_are_read_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLINE_SCHEDULE_RUNS", json.dumps({"nightly": nightly()}))
    runs = ScheduleSettings().runs
    assert runs["nightly"].cron == "0 2 * * *"
    assert runs["nightly"].budget_usd == 5
    assert runs["nightly"].latency_profile == "batch"


def test_a_run_defaults_to_the_scheduled_tenant_and_the_batch_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = ScheduledRun(cron="0 2 * * *", source="folder", path="/data")
    assert (run.tenant, run.latency_profile, run.kind) == ("scheduled", "batch", "research_brief")
    # The settings group is `schedule` (FLEETLINE_SCHEDULE_RUNS); the old name is not read.
    monkeypatch.setenv("FLEETLINE_BATCH_RUNS", json.dumps({"old": nightly()}))
    monkeypatch.setenv("FLEETLINE_SCHEDULE_RUNS", json.dumps({"nightly": nightly()}))
    assert list(load_settings().schedule.runs) == ["nightly"]


def test_an_invalid_cron_is_a_config_error_naming_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEETLINE_SCHEDULE_RUNS", json.dumps({"nightly": nightly(cron="61 2 * *")}))
    with pytest.raises(
        ConfigError, match=r"(?i)runs[_:. ]+nightly[_:. ]+cron.*invalid cron expression '61"
    ):
        load_settings()
    with pytest.raises(ConfigError, match="scheduled run 'nightly': invalid cron"):
        cron_schedule("0 25 * * *", "nightly")


def test_unknown_run_names_the_known_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "FLEETLINE_SCHEDULE_RUNS", json.dumps({"nightly": nightly(), "hourly": nightly()})
    )
    with pytest.raises(
        UnknownSchedule, match=r"no scheduled run 'weekly' \(known: hourly, nightly\)"
    ):
        get_run(load_settings(), "weekly")


def test_the_schedule_has_the_check_and_one_crontab_per_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEETLINE_KILLSWITCH_INTERVAL_S", "2.5")
    monkeypatch.setenv("FLEETLINE_SCHEDULE_RUNS", json.dumps({"nightly": nightly()}))
    schedule = build_schedule(FleetlineSettings())
    assert schedule["killswitch-check"]["task"] == TASK_KILLSWITCH_CHECK
    assert schedule["killswitch-check"]["schedule"].total_seconds() == 2.5
    entry = schedule["schedule-nightly"]
    assert entry["task"] == TASK_SCHEDULED_RUN and entry["args"] == ("nightly",)
    assert isinstance(entry["schedule"], crontab)
    assert entry["schedule"].hour == {2} and entry["schedule"].minute == {0}


@pytest.mark.parametrize(
    ("cron", "now", "slot"),
    [
        ("0 2 * * *", ts(2026, 11, 25, 2, 0, 0), "20261125T0200Z"),
        ("0 2 * * *", ts(2026, 11, 25, 1, 59, 58), "20261125T0200Z"),  # a clock just behind
        ("0 2 * * *", ts(2026, 11, 25, 1, 0, 0), "20261124T0200Z"),
        ("0 2 * * *", ts(2026, 11, 25, 23, 59, 0), "20261125T0200Z"),
        ("*/15 * * * *", ts(2026, 11, 25, 10, 44, 0), "20261125T1030Z"),
        ("30 9 * * 1", ts(2026, 11, 25, 12, 0, 0), "20261123T0930Z"),  # Wed -> Mon
        ("0 0 29 2 *", ts(2026, 11, 25, 12, 0, 0), "20240229T0000Z"),
        ("0 12 1 * *", ts(2026, 1, 1, 11, 0, 0), "20251201T1200Z"),
    ],
)
def test_the_run_id_is_the_latest_cron_slot(cron: str, now: float, slot: str) -> None:
    assert slot_id(cron_slot(cron, now)) == slot


def test_doc_ids_are_sanitised_and_unique() -> None:
    taken: set[str] = set()
    assert doc_id("Q3 report (final)", taken) == "Q3-report-final"
    assert doc_id("Q3 report [final]", taken) == "Q3-report-final-2"
    assert doc_id("日本語", taken) == "doc"
    assert len(doc_id("x" * 100, taken)) <= 64


def test_a_folder_is_one_job_with_one_document_per_text_file(tmp_path: Path) -> None:
    (tmp_path / "b.md").write_text("Beta grew.")
    (tmp_path / "a.txt").write_text("Alpha fell.")
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    run = ScheduledRun.model_validate(nightly(path=str(tmp_path), budget_usd=2))

    jobs, skipped = load_jobs(run)

    assert len(jobs) == 1
    n, spec = jobs[0]
    assert n == 1
    assert spec["input"] == {
        "question": "What changed?",
        "documents": [{"id": "a", "text": "Alpha fell."}, {"id": "b", "text": "Beta grew."}],
    }
    assert spec["tenant"] == "scheduled" and spec["budget_usd"] == 2
    assert skipped == [Skipped(file="empty.txt", reason="empty file")]


def test_an_empty_folder_is_skipped_with_the_reason(tmp_path: Path) -> None:
    jobs, skipped = load_jobs(ScheduledRun.model_validate(nightly(path=str(tmp_path))))
    assert jobs == []
    assert "no readable" in skipped[0].reason


def test_jsonl_is_one_job_per_line_and_bad_lines_are_numbered(tmp_path: Path) -> None:
    lines = [
        json.dumps({"input": {"question": "q1?", "documents": [{"id": "d", "text": "t"}]}}),
        "",
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"tenant": "acme", "input": {}}),
    ]
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines))
    run = ScheduledRun.model_validate(nightly(source="jsonl", path=str(path)))

    jobs, skipped = load_jobs(run)

    assert [n for n, _ in jobs] == [1, 5]
    assert jobs[0][1]["tenant"] == "scheduled" and jobs[1][1]["tenant"] == "acme"
    assert [(s.line, s.reason.split(":")[0]) for s in skipped] == [
        (3, "not valid JSON"),
        (4, "not a JSON object"),
    ]


def test_summary_ok_only_when_every_job_ran_and_ended_well() -> None:
    good = RunSummary(name="n", run_id="r", jobs=2, succeeded=1, degraded=1)
    assert good.ok and good.finished == 2
    assert not good.model_copy(update={"failed": 1}).ok
    assert not good.model_copy(update={"skipped": [Skipped(line=2, reason="bad")]}).ok
    assert good.fields()["skipped"] == "[]"


def state(scope: str) -> SwitchState:
    return SwitchState(scope, Window.DAY, "limit", 0.0, 1.0)


class FanInQueues:
    """The one Redis read `pausable_queues` makes: the queues fan-outs finalise jobs on."""

    def __init__(self, *queues: str) -> None:
        self.queues = {q.encode() for q in queues}
        self.read: list[str] = []

    def smembers(self, key: str) -> set[bytes]:
        self.read.append(key)
        return self.queues


AGENTS = ["extraction", "classification", "analysis", "synthesis"]


def test_the_queues_of_fan_in_steps_are_never_pausable() -> None:
    client = FanInQueues("synthesis")
    assert pausable_queues(client, AGENTS) == ["analysis", "classification", "extraction"]  # type: ignore[arg-type]
    assert pausable_queues(FanInQueues(), AGENTS) == sorted(AGENTS)  # type: ignore[arg-type]


def test_which_queues_a_switch_pauses() -> None:
    pausable = pausable_queues(FanInQueues("synthesis"), AGENTS)  # type: ignore[arg-type]
    assert queues_for("fleet", pausable) == ["analysis", "classification", "extraction"]
    assert queues_for("worker_type:analysis", pausable) == ["analysis"]
    assert queues_for("worker_type:synthesis", pausable) == []
    assert queues_for("worker_type:nope", pausable) == []
    assert queues_for("tenant:acme", pausable) == []
    active = [state("worker_type:analysis"), state("fleet"), state("tenant:a")]
    assert paused_queues(active, pausable) == {
        "analysis": ["fleet", "worker_type:analysis"],
        "classification": ["fleet"],
        "extraction": ["fleet"],
    }
