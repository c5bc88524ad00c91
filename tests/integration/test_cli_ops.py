"""The operator CLI against a real Redis: kill switches, spend, and dead letters."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis
from typer.testing import CliRunner

from fleetline.producer.cli import app as cli
from fleetline.shared.deadletters import DeadLetterStore
from fleetline.shared.embedded_redis import free_port
from fleetline.shared.killswitch import KillSwitches
from fleetline.shared.ledger import Ledger, SpendSettings, scopes_for
from fleetline.shared.settings import get_settings
from tests.integration.conftest import FleetFactory

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture
def settled(redis_url: str) -> Iterator[None]:
    get_settings.cache_clear()
    yield


def invoke(*args: str) -> tuple[int, str, str]:
    get_settings.cache_clear()
    result = runner.invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_killswitch_trip_status_and_reset(redis_client: redis.Redis, settled: None) -> None:
    code, out, _ = invoke(
        "killswitch", "trip", "--scope", "tenant:acme", "--window", "hour", "--reason", "loop"
    )
    assert code == 0 and "tripped tenant:acme (hour)" in out
    assert KillSwitches(redis_client).active_for("acme", None) is not None

    code, out, err = invoke("killswitch", "status", "--json")
    status = json.loads(out)
    assert code == 0
    assert [(s["scope"], s["window"], s["reason"]) for s in status["switches"]] == [
        ("tenant:acme", "hour", "loop")
    ]
    assert status["paused_queues"] == {} and status["last_check_at"] is None
    code, out, err = invoke("killswitch", "status")
    assert code == 0 and "tenant:acme" in out and "is beat running?" in err

    code, out, _ = invoke("killswitch", "reset", "--scope", "tenant:acme", "--window", "hour")
    assert code == 0 and "reset tenant:acme (hour)" in out
    code, out, _ = invoke("killswitch", "reset", "--scope", "tenant:acme", "--window", "hour")
    assert code == 0 and "was not tripped" in out
    assert invoke("killswitch", "status", "--json")[1].count("tenant:acme") == 0


def test_killswitch_refuses_a_bad_scope_with_exit_2(settled: None) -> None:
    code, _, err = invoke("killswitch", "trip", "--scope", "everyone")
    assert code == 2 and "Invalid value for '--scope'" in err and "kill switch scope" in err
    assert invoke("killswitch", "reset", "--window", "week")[0] == 2


def test_reset_warns_while_spend_is_still_over_the_limit(
    redis_client: redis.Redis, settled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETLINE_SPEND_DAILY_USD", "0.01")
    record(redis_client, 0.02, tenant="t1", worker_type="analysis")
    KillSwitches(redis_client).trip("fleet", "day", "limit")

    code, out, _ = invoke("killswitch", "reset", "--json")

    assert code == 0
    assert json.loads(out)["was_tripped"] is True
    assert json.loads(out)["over_limit"].startswith("fleet has spent $0.020000")
    code, out, err = invoke("killswitch", "reset")
    assert code == 0 and "was not tripped" in out
    assert "beat trips it again at its next check" in " ".join(err.split())


def record(
    client: redis.Redis, usd: float, tenant: str, worker_type: str, model: str = "m"
) -> None:
    """Spend as a worker records it (reserve, settle), with no limit in the way."""
    ledger = Ledger(client)
    call = f"call-{time.time_ns()}"
    scopes = scopes_for(
        SpendSettings.model_construct(), job_id="j1", tenant=tenant, worker_type=worker_type
    )
    assert ledger.reserve(call, usd * 2, 500, scopes, model=model).ok
    assert ledger.settle(call, usd, 400).applied
    ledger.record_saving("cache", usd / 2, scopes)


def test_spend_reports_spent_saved_and_each_limit_headroom(
    redis_client: redis.Redis, settled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETLINE_SPEND_DAILY_USD", "1")
    monkeypatch.setenv("FLEETLINE_SPEND_TENANT_DAILY_USD", '{"acme": 0.5, "*": 0.25}')
    monkeypatch.setenv("FLEETLINE_SPEND_WORKER_TYPE_HOURLY_USD", '{"analysis": 2}')
    record(redis_client, 0.1, "acme", "analysis", "sim-large")
    record(redis_client, 0.05, "globex", "extraction", "sim-small")
    # A call in flight: held, not spent (under the limits the workers read too: a hold is
    # counted where a limit reads it).
    ledger = Ledger(redis_client)
    held = scopes_for(SpendSettings(), job_id="j2", tenant="acme", worker_type="analysis")
    assert ledger.reserve("in-flight", 0.2, 100, held, model="sim-large").ok

    code, out, _ = invoke("spend", "--json")

    assert code == 0
    report = json.loads(out)
    assert report["window"] == "day"
    assert report["spent_usd"] == pytest.approx(0.15)
    assert report["reserved_usd"] == pytest.approx(0.2)
    assert report["saved_cache_usd"] == pytest.approx(0.075)
    limits = {r["scope"]: r for r in report["limits"]}
    assert set(limits) == {"fleet", "tenant:acme", "tenant:globex"}, "hourly limits not shown"
    assert limits["fleet"]["headroom_usd"] == pytest.approx(1 - 0.15 - 0.2)
    assert limits["tenant:acme"]["headroom_usd"] == pytest.approx(0.5 - 0.1 - 0.2)
    assert limits["tenant:globex"]["limit_usd"] == 0.25
    assert set(report["groups"]) == {"analysis", "extraction"}
    assert report["groups"]["analysis"]["spent_usd"] == pytest.approx(0.1)

    code, out, _ = invoke("spend", "--window", "hour", "--by", "model", "--json")
    hourly = json.loads(out)
    assert set(hourly["groups"]) == {"sim-large", "sim-small"}
    assert [r["scope"] for r in hourly["limits"]] == ["worker_type:analysis"]

    code, out, _ = invoke("spend", "--by", "tenant")
    assert code == 0
    for text in ("saved by cache", "headroom", "tenant:acme", "globex", "$0.150000"):
        assert text in out


def test_ops_commands_exit_4_when_redis_is_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEETLINE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    monkeypatch.setenv("FLEETLINE_REDIS_SUBMIT_TIMEOUT_S", "0.5")
    for args in (["killswitch", "status"], ["spend"], ["dlq", "list"]):
        code, _, err = invoke(*args)
        assert code == 4, (args, err)
        assert "Redis unavailable" in err


def wait_for_letters(store: DeadLetterStore, count: int, exclude: set[str]) -> list[str]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        ids = [letter.id for letter in store.list() if letter.id not in exclude]
        if len(ids) >= count:
            return ids
        time.sleep(0.1)
    raise AssertionError(f"{count} new dead letters not seen; have {store.count()}")


def test_dlq_list_show_replay_and_purge(
    start_fleet: FleetFactory, redis_client: redis.Redis
) -> None:
    fleet = start_fleet(worker_types=["extraction"], with_beat=False)
    store = DeadLetterStore(redis_client, 100)
    fleet.producer.app.send_task("fleetline.no_such_task", args=({"x": 1},), queue="extraction")
    [first] = wait_for_letters(store, 1, set())

    code, out, _ = invoke("dlq", "list", "--json")
    assert code == 0
    [listed] = json.loads(out)
    assert (listed["id"], listed["reason"], listed["queue"]) == (
        first,
        "unknown_task",
        "extraction",
    )
    code, out, _ = invoke("dlq", "list")
    assert code == 0 and "Dead letters (1)" in out and "fleetline.no_such_task" in out, out
    code, out, _ = invoke("dlq", "show", first)
    assert code == 0 and '"x": 1' in out and "unknown_task" in out
    assert invoke("dlq", "show", "1-1")[0] == 2
    assert invoke("dlq", "show", "not-an-id")[0] == 2

    # The worker still does not know the task: replayed, it is dead-lettered again.
    code, out, _ = invoke("dlq", "replay", first)
    assert code == 0 and f"replayed {first}" in out
    [again] = wait_for_letters(store, 1, {first})
    assert store.count() == 1, "the replayed letter is gone, its new death recorded once"
    assert store.get(again) is not None and store.get(again).task == "fleetline.no_such_task"  # type: ignore[union-attr]

    # A poison letter keeps only the arguments; replay sends them again as a new message.
    poison = store.add(
        reason="poison",
        detail="2 deliveries died mid-run",
        queue="extraction",
        task="fleetline.no_such_task",
        task_id="job1:extract-d0",
        message={"args": [{"job_id": "job1"}]},
    )
    code, out, _ = invoke("dlq", "replay", poison, "--json")
    assert code == 0 and json.loads(out) == {"id": poison, "queue": "extraction", "deleted": True}
    [resent] = wait_for_letters(store, 1, {again})
    letter = store.get(resent)
    assert letter is not None and letter.reason == "unknown_task"
    assert letter.task_id == "job1:extract-d0"
    assert store.count() == 2

    assert invoke("dlq", "purge")[0] == 1, "purge asks first"
    assert store.count() == 2
    code, out, _ = invoke("dlq", "purge", "--yes", "--json")
    assert code == 0 and json.loads(out) == {"purged": 2}
    assert store.count() == 0
    assert invoke("dlq", "list")[1].strip() == "no dead letters"
