"""Kill-switch enforcement by beat, with real workers, a real beat and a real Redis.

Spend can only pass a limit that was lowered after it was spent (reservations refuse
anything that would go over), so these tests spend first and lower the limit after.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from fleetline.beat.enforcement import enforce, pausable_queues
from fleetline.producer.cli import app as cli
from fleetline.producer.supervisor import beat_command
from fleetline.shared import keys
from fleetline.shared.errors import KillSwitchTripped
from fleetline.shared.fleet.loading import load_fleet
from fleetline.shared.killswitch import KillSwitches, SwitchState, read_enforcement
from fleetline.shared.ledger import Ledger, SpendSettings, Window, scopes_for
from fleetline.shared.names import HOUSEKEEPING_QUEUE
from fleetline.shared.schemas import JobStatus
from fleetline.shared.settings import get_settings
from tests.integration.conftest import FleetFactory, RunningFleet
from tests.integration.test_failure_handling import brief

pytestmark = pytest.mark.integration

# The agents' queues a tripped switch pauses: every one but synthesis, where this test's
# fan-outs end (tools' queues are never paused).
SUBTASK_QUEUES = set(load_fleet(None).agents) - {"synthesis"}
runner = CliRunner()


def until(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what}: not after {timeout_s}s")


def consumed(fleet: RunningFleet) -> dict[str, set[str]]:
    """Worker type -> the queues its workers consume right now."""
    replies = fleet.producer.app.control.inspect(timeout=1.0).active_queues() or {}
    return {name.split("-")[0]: {q["name"] for q in queues} for name, queues in replies.items()}


def spend(client: redis.Redis, usd: float) -> None:
    """Spend recorded by the ledger as a worker's call would be: reserve, then settle."""
    ledger = Ledger(client)
    call = f"seed-{time.time_ns()}"
    # Spent before any limit applied (model_construct: not read from the environment).
    unlimited = SpendSettings.model_construct()
    scopes = scopes_for(unlimited, job_id="seed", tenant="t1", worker_type="analysis")
    assert ledger.reserve(call, usd, 100, scopes, model="sim-large").ok
    assert ledger.settle(call, usd, 100).applied


class FakeControl:
    def __init__(self) -> None:
        self.paused: list[str] = []
        self.resumed: list[str] = []

    def pause(self, queue: str) -> None:
        self.paused.append(queue)

    def resume(self, queue: str) -> None:
        self.resumed.append(queue)


def test_a_check_trips_once_pauses_the_covered_queues_and_resumes_them(
    redis_client: redis.Redis,
) -> None:
    spend(redis_client, 0.01)
    reported: list[SwitchState] = []
    control = FakeControl()
    # As a producer records it: fan-outs end on synthesis, so no switch pauses it.
    redis_client.sadd(keys.fan_in_queues(), "synthesis")
    pausable = pausable_queues(redis_client, [*SUBTASK_QUEUES, "synthesis"])
    assert set(pausable) == SUBTASK_QUEUES

    first = enforce(
        redis_client, SpendSettings(daily_usd=0.005), control, pausable, report=reported.append
    )
    assert [(s.scope, s.window) for s in first.tripped] == [("fleet", Window.DAY)]
    assert [s.scope for s in reported] == ["fleet"]
    assert "limit $0.005" in reported[0].reason
    assert set(control.paused) == SUBTASK_QUEUES and "synthesis" not in control.paused

    again = enforce(
        redis_client, SpendSettings(daily_usd=0.005), control, pausable, report=reported.append
    )
    assert again.tripped == [] and len(reported) == 1, "a tripped switch is reported once"
    assert again.newly_paused == [] and again.resumed == []

    KillSwitches(redis_client).reset("fleet", "day")
    KillSwitches(redis_client).trip("worker_type:analysis", "hour", "by hand")
    KillSwitches(redis_client).trip("tenant:acme", "hour", "by hand")
    control = FakeControl()
    after = enforce(
        redis_client, SpendSettings(daily_usd=1.0), control, pausable, report=reported.append
    )
    assert after.tripped == []
    assert sorted(after.resumed) == sorted(SUBTASK_QUEUES - {"analysis"})
    assert control.paused == ["analysis"]
    record = read_enforcement(redis_client)
    assert record.paused == {"analysis": ["worker_type:analysis"]}
    assert record.checks == 3 and record.last_check_at is not None


def test_beat_trips_the_switch_refuses_jobs_pauses_queues_and_a_reset_resumes(
    start_fleet: FleetFactory, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # Spend first, with no limit set.
    before = start_fleet(with_beat=False, FLEETLINE_SIM_LATENCY_MS="5")
    job = before.wait(before.producer.submit(brief(2, deadline_s=30)).job_id)
    assert job.status is JobStatus.SUCCEEDED, before.logs()
    spent = Ledger(redis_client).spend_report(Window.DAY).fleet.spent_usd
    assert spent > 0
    before.fleet.stop()

    # The daily limit is now below what was spent: beat's next check trips the switch.
    limit = f"{spent / 2:.8f}"
    fleet = start_fleet(FLEETLINE_SPEND_DAILY_USD=limit, FLEETLINE_KILLSWITCH_INTERVAL_S="1")
    switches = KillSwitches(redis_client)
    state = until(lambda: switches.active_for(None, None), 15, "fleet switch tripped")
    assert (state.scope, state.window) == ("fleet", Window.DAY)

    with pytest.raises(KillSwitchTripped) as refused:
        fleet.producer.submit(brief(1))
    assert f"daily limit ${float(limit):g}" in str(refused.value)
    assert "resets at" in str(refused.value)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(brief(1)))
    get_settings.cache_clear()
    result = runner.invoke(cli, ["submit", str(spec)])
    assert result.exit_code == 3, result.output
    assert "spend limit is reached" in result.stderr

    paused = until(
        lambda: (q := consumed(fleet)) and not (SUBTASK_QUEUES & set().union(*q.values())) and q,
        15,
        "subtask queues paused",
    )
    assert paused["synthesis"] == {"synthesis", HOUSEKEEPING_QUEUE}, "synthesis keeps running"
    # Every worker keeps its housekeeping queue, where the deadline watchdog runs.
    assert all(HOUSEKEEPING_QUEUE in queues for queues in paused.values())
    status = json.loads(runner.invoke(cli, ["killswitch", "status", "--json"]).stdout)
    assert [s["scope"] for s in status["switches"]] == ["fleet"]
    assert set(status["paused_queues"]) == SUBTASK_QUEUES
    fleet.fleet.stop()

    # The limit is raised and the fleet restarted: the pause outlives the restart ...
    after = start_fleet(FLEETLINE_SPEND_DAILY_USD="5", FLEETLINE_KILLSWITCH_INTERVAL_S="1")
    until(
        lambda: (q := consumed(after)) and not (SUBTASK_QUEUES & set().union(*q.values())),
        15,
        "subtask queues of the restarted fleet paused",
    )
    # ... until the switch is reset by hand.
    get_settings.cache_clear()
    reset = runner.invoke(cli, ["killswitch", "reset", "--scope", "fleet", "--window", "day"])
    assert reset.exit_code == 0, reset.output
    assert "reset fleet (day)" in reset.stdout
    resumed = until(
        lambda: (
            (q := consumed(after))
            and all(
                q.get(wt) == {wt, HOUSEKEEPING_QUEUE}
                for wt in SUBTASK_QUEUES.intersection(after.worker_types)
            )
            and q
        ),
        15,
        "subtask queues resumed",
    )
    assert resumed["synthesis"] == {"synthesis", HOUSEKEEPING_QUEUE}, "a resume stays home"
    job = after.wait(after.producer.submit(brief(2, deadline_s=30)).job_id)
    assert job.status is JobStatus.SUCCEEDED, after.logs()
    assert read_enforcement(redis_client).paused == {}


def test_a_second_beat_never_schedules_twice(
    start_fleet: FleetFactory, redis_client: redis.Redis, tmp_path: Path
) -> None:
    fleet = start_fleet(worker_types=["synthesis"], FLEETLINE_KILLSWITCH_INTERVAL_S="1")
    until(lambda: read_enforcement(redis_client).checks >= 1, 15, "first check")
    second_log = tmp_path / "beat-2.log"
    with second_log.open("ab") as out:
        second = subprocess.Popen(
            beat_command(fleet.settings), env=fleet.env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        time.sleep(3)  # the second beat is up, and waiting for the lock
        start, first_count = time.monotonic(), read_enforcement(redis_client).checks
        time.sleep(6)
        ran = read_enforcement(redis_client).checks - first_count
        elapsed = time.monotonic() - start
        assert second.poll() is None, second_log.read_text()
        # One beat sends one check a second; two would send about twice as many.
        assert elapsed * 0.5 <= ran <= elapsed + 2, f"{ran} checks in {elapsed:.1f}s"
        logs = [fleet.log_dir / "beat.log", second_log]
        holders = [p.name for p in logs if "beat: Acquired lock" in p.read_text()]
        assert holders == ["beat.log"], holders
        assert redis_client.exists("fl:redbeat::lock")
    finally:
        second.terminate()
        second.wait(timeout=15)


class SentryInbox:
    """A local Sentry ingestion endpoint: collects every envelope item posted to it."""

    def __init__(self) -> None:
        self.items: list[tuple[dict[str, Any], bytes]] = []
        self.raw: list[bytes] = []
        inbox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                inbox.receive(self.path, body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def receive(self, path: str, body: bytes) -> None:
        assert path.startswith("/api/42/envelope/"), path
        self.raw.append(body)
        _, _, rest = body.partition(b"\n")
        while rest:
            header_line, _, rest = rest.partition(b"\n")
            if not header_line.strip():
                continue
            header = json.loads(header_line)
            if "length" in header:
                payload, rest = rest[: header["length"]], rest[header["length"] + 1 :]
            else:
                payload, _, rest = rest.partition(b"\n")
            self.items.append((header, payload))

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(p) for h, p in self.items if h.get("type") == "event"]


@pytest.fixture
def sentry_inbox() -> Iterator[SentryInbox]:
    inbox = SentryInbox()
    yield inbox
    inbox.server.shutdown()
    inbox.server.server_close()


def test_a_tripped_switch_is_one_sentry_event_tagged_with_its_scope_and_no_documents(
    start_fleet: FleetFactory, redis_client: redis.Redis, sentry_inbox: SentryInbox
) -> None:
    secret = "Zanzibar Holdings secretly wired 7731 million"
    fleet = start_fleet(
        FLEETLINE_SENTRY_DSN=f"http://publickey@127.0.0.1:{sentry_inbox.port}/42",
        FLEETLINE_SPEND_DAILY_USD="0.5",
        FLEETLINE_KILLSWITCH_INTERVAL_S="1",
        FLEETLINE_SIM_LATENCY_MS="5",
    )
    spec = brief(2, deadline_s=30)
    spec["input"]["documents"][0]["text"] = f"{secret}. Acme Corp grew."  # type: ignore[index]
    job = fleet.wait(fleet.producer.submit(spec).job_id)
    assert job.status is JobStatus.SUCCEEDED, fleet.logs()
    assert sentry_inbox.events() == [], "a healthy job reports nothing"

    spend(redis_client, 0.6)  # past the daily limit: the next check trips the fleet switch
    events = until(sentry_inbox.events, 15, "a Sentry event")
    time.sleep(2.5)  # two more checks: the switch is reported once, not on every check

    events = sentry_inbox.events()
    assert len(events) == 1, events
    event = events[0]
    assert event["level"] == "error"
    assert "spend kill switch tripped: fleet (day)" in event["message"]
    tags = event["tags"]
    tags = dict(tags) if isinstance(tags, dict) else {k: v for k, v in tags}
    assert tags["scope"] == "fleet" and tags["window"] == "day"
    everything = b"".join(sentry_inbox.raw)
    assert secret.encode() not in everything
    assert b"Zanzibar" not in everything
    assert redis_client.exists(keys.kill_switch("fleet", "d"))
