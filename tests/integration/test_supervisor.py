"""The supervisor on real workers, Redis, a local HTTP sink and a local SMTP server: every
approved action delivered once under its idempotency key (a SIGKILL mid-delivery resends
the same key; a done action is never sent again), blocked hosts never contacted, and a
`needs_review` action delivered only after `fleetline approve`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fleetline.producer.cli import app as cli
from fleetline.producer.submit import parse_spec
from fleetline.shared.action_state import ActionStore
from fleetline.shared.errors import SpecError
from fleetline.shared.pattern_messages import ActionMessage, send_action
from fleetline.shared.schemas import JobStatus
from tests.integration.action_sinks import HttpSink, SmtpSink, http_sink, smtp_sink
from tests.integration.conftest import ROOT, FleetFactory, RunningFleet

pytestmark = pytest.mark.integration

APP = "tests.integration.notify_fleet:fleet"
SECRET = "whsec-supervisor-test"
SAMPLE = json.loads((ROOT / "ops" / "samples" / "notify.json").read_text())


@pytest.fixture
def sinks() -> Iterator[tuple[HttpSink, HttpSink, SmtpSink]]:
    with http_sink(SECRET) as allowed, http_sink(SECRET) as stranger, smtp_sink() as mail:
        yield allowed, stranger, mail


def _fleet(start_fleet: FleetFactory, sinks: Any, tmp_path: Path, **env: str) -> RunningFleet:
    allowed, _, mail = sinks
    settings = {
        "FLEETLINE_APP": APP,
        "FLEETLINE_SUPERVISOR_ALLOWED_HOSTS": json.dumps([f"127.0.0.1:{allowed.port}"]),
        "FLEETLINE_SUPERVISOR_REVIEW_ABOVE": "100",
        "FLEETLINE_SUPERVISOR_DENY_ABOVE": "1000",
        "FLEETLINE_SUPERVISOR_REVIEW_TIMEOUT_S": "30",
        "FLEETLINE_SUPERVISOR_WEBHOOK_SECRET": SECRET,
        "FLEETLINE_SUPERVISOR_SMTP_PORT": str(mail.port),
        "FLEETLINE_TEST_KILL_FILE": str(tmp_path / "kill"),
    }
    return start_fleet(
        worker_types=["notifier", "webhook", "email"], with_beat=False, **{**settings, **env}
    )


def _spec(targets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **SAMPLE,
        "deadline_s": 90,
        "input": {"message": "Invoice 42 is paid.", "targets": targets},
    }


def _log(fleet: RunningFleet, job_id: str) -> dict[str, dict[str, Any]]:
    runner = CliRunner()
    shown = runner.invoke(cli, ["actions", job_id, "--json"])
    assert shown.exit_code == 0, shown.output
    return {a["action_id"]: a for a in json.loads(shown.stdout)}


def _wait_for(check: Any, fleet: RunningFleet, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, fleet.logs()
        time.sleep(0.1)


def test_approved_actions_are_delivered_once_and_blocked_hosts_never_contacted(
    start_fleet: FleetFactory, sinks: Any, tmp_path: Path
) -> None:
    allowed, stranger, mail = sinks
    fleet = _fleet(start_fleet, sinks, tmp_path)
    targets = [
        {"url": allowed.url(), "amount": 10},
        {"email": "ops@example.com", "amount": 20},
        {"url": stranger.url(), "amount": 10},  # not allow-listed
        {"url": allowed.url(), "amount": 5000},  # above deny_above
    ]
    job = fleet.wait(fleet.producer.submit(_spec(targets)).job_id)
    assert job.status is JobStatus.SUCCEEDED, fleet.logs()
    log = _log(fleet, job.job_id)
    assert {k: v["decision"] for k, v in log.items()} == {
        "target-1-a1": "approved",
        "target-2-a1": "approved",
        "target-3-a1": "blocked",
        "target-4-a1": "blocked",
    }
    hook, sent, off_list, too_big = (log[f"target-{n}-a1"] for n in (1, 2, 3, 4))
    # Delivered once each, under the action's key, signed.
    assert [r["key"] for r in allowed.requests] == [hook["idempotency_key"]]
    assert allowed.requests[0]["signed"] is True
    assert json.loads(allowed.requests[0]["body"])["amount"] == 10
    assert [m["Message-ID"] for m in mail.messages] == [f"<{sent['idempotency_key']}@fleetline>"]
    assert hook["state"] == sent["state"] == "done" and hook["executed_at"] is not None
    assert hook["result"]["status_code"] == 200
    # Blocked: never contacted, with the reason and what would comply.
    assert stranger.requests == []
    assert off_list["state"] == "closed" and off_list["executed_at"] is None
    assert off_list["violations"][0]["policy"] == "allowed_hosts"
    assert f"127.0.0.1:{allowed.port}" in off_list["recommendation"]
    assert {v["policy"] for v in too_big["violations"]} == {"deny_above", "review_above"}
    assert "at most 1000" in too_big["recommendation"]
    assert {
        "action_id",
        "agent",
        "type",
        "args",
        "decision",
        "violations",
        "recommendation",
        "reviewer",
        "policy_version",
        "executed_at",
        "result",
    } <= set(hook)
    # Every decision is in the audit trail; the drafts were charged as any step is.
    audit = fleet.store.audit(job.job_id)
    assert sum(1 for e in audit if e.action == "action_reviewed") == 4
    assert job.cost_usd > 0
    assert (job.result or {})["delivered"] == ["target-1-a1", "target-2-a1"]


def test_a_sigkill_mid_delivery_resends_the_same_key_and_a_done_action_is_never_sent_again(
    start_fleet: FleetFactory, sinks: Any, tmp_path: Path
) -> None:
    allowed, _, _ = sinks
    # The killed worker's message comes back once its visibility timeout has passed.
    short = {
        "FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S": "8",
        "FLEETLINE_CELERY_UNACKED_RESTORE_INTERVAL_S": "1",
        **{
            f"FLEETLINE_WORKERS__{name}__{field}": value
            for name in ("NOTIFIER", "WEBHOOK", "EMAIL")
            for field, value in (
                ("SOFT_TIME_LIMIT_S", "4"),
                ("TIME_LIMIT_S", "5"),
                ("RETRY_BACKOFF_MAX_S", "1"),
                ("MAX_CALL_S", "4"),
            )
        },
    }
    fleet = _fleet(start_fleet, sinks, tmp_path, **short)
    (tmp_path / "kill").touch()
    job = fleet.wait(fleet.producer.submit(_spec([{"url": allowed.url(), "amount": 1}])).job_id)
    assert job.status is JobStatus.SUCCEEDED, fleet.logs()
    assert not (tmp_path / "kill").exists()  # the kill happened
    entry = _log(fleet, job.job_id)["target-1-a1"]
    key = entry["idempotency_key"]
    # Sent twice (the first delivery died before it was recorded), under one key, applied once.
    assert [r["key"] for r in allowed.requests] == [key, key]
    assert allowed.applied == [key]
    started = [e for e in fleet.store.audit(job.job_id) if e.action == "action_started"]
    assert [e.fields["idempotency_key"] for e in started] == [key, key]
    assert entry["attempts"] == 2 and entry["state"] == "done"
    # A replay of the action's message (a redelivery, a second approval) sends nothing.
    record = fleet.store.raw(job.job_id)
    message = ActionMessage(
        job_id=job.job_id,
        kind="notify",
        tenant=record["tenant"],
        deadline_at=time.time() + 30,
        action_id="target-1-a1",
    )
    tool = fleet.settings.fleet.tools["webhook"]
    send_action(fleet.producer.app, fleet.settings, message, tool, "target-1-a1:run")
    time.sleep(2.0)
    assert len(allowed.requests) == 2


def test_a_needs_review_action_is_delivered_only_after_approve(
    start_fleet: FleetFactory, sinks: Any, tmp_path: Path
) -> None:
    allowed, _, mail = sinks
    fleet = _fleet(start_fleet, sinks, tmp_path)
    targets = [{"url": allowed.url(), "amount": 500}, {"email": "cfo@example.com", "amount": 700}]
    job_id = fleet.producer.submit(_spec(targets)).job_id
    runner = CliRunner()

    def waiting() -> list[str]:
        shown = runner.invoke(cli, ["status", job_id, "--json"])
        return sorted(json.loads(shown.stdout)["waiting_for"])

    _wait_for(lambda: waiting() == ["target-1-a1", "target-2-a1"], fleet)
    assert fleet.store.get(job_id).status is JobStatus.RUNNING
    assert allowed.requests == [] and mail.messages == []
    unknown = runner.invoke(cli, ["approve", job_id, "target-9-a1"])
    assert unknown.exit_code == 2
    assert runner.invoke(cli, ["approve", "no-such-job", "target-1-a1"]).exit_code == 2
    approved = runner.invoke(cli, ["approve", job_id, "target-1-a1"])
    assert approved.exit_code == 0, approved.output
    rejected = runner.invoke(cli, ["reject", job_id, "target-2-a1", "--reason", "not this month"])
    assert rejected.exit_code == 0, rejected.output
    job = fleet.wait(job_id)
    assert job.status is JobStatus.SUCCEEDED, fleet.logs()
    assert job.waiting_for == []
    log = _log(fleet, job_id)
    assert [r["key"] for r in allowed.requests] == [log["target-1-a1"]["idempotency_key"]]
    assert mail.messages == []
    assert log["target-1-a1"]["decision"] == "approved"
    assert log["target-1-a1"]["reviewer"].startswith("cli:")
    assert log["target-1-a1"]["violations"][0]["policy"] == "review_above"
    assert log["target-2-a1"]["decision"] == "rejected"
    assert log["target-2-a1"]["reason"] == "not this month"
    # Deciding again is refused: the action is not waiting any more.
    assert runner.invoke(cli, ["reject", job_id, "target-1-a1"]).exit_code == 1


def test_a_review_nobody_decides_counts_as_rejected_and_short_deadlines_are_refused(
    start_fleet: FleetFactory, sinks: Any, tmp_path: Path
) -> None:
    allowed, _, _ = sinks
    fleet = _fleet(start_fleet, sinks, tmp_path, FLEETLINE_SUPERVISOR_REVIEW_TIMEOUT_S="2")
    with pytest.raises(SpecError) as refused:
        parse_spec({**_spec([{"url": allowed.url()}]), "deadline_s": 1.5}, fleet.settings)
    assert refused.value.errors[0][0] == "deadline_s"
    job = fleet.wait(fleet.producer.submit(_spec([{"url": allowed.url(), "amount": 500}])).job_id)
    assert job.status is JobStatus.SUCCEEDED, fleet.logs()
    entry = ActionStore(fleet.store.client, 60).entries(job.job_id)[0]
    assert (entry.decision, entry.reviewer) == ("rejected", "review_timeout")
    assert allowed.requests == []
