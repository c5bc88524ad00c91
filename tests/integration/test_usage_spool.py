"""The usage spool against a real Redis: a dead writer's bills are settled, a live one's not
taken, another Redis's never touched, and a long-lived file stays small."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import pytest
import redis

from fleetline.shared.ledger import Ledger, Scope, ScopeKind
from fleetline.workers import usage_spool
from fleetline.workers.usage_spool import Usage, UsageSpool

pytestmark = pytest.mark.integration

SCOPES = [Scope(ScopeKind.JOB, "j1"), Scope(ScopeKind.FLEET)]


def _bill_and_die(directory: str, url: str) -> None:  # pragma: no cover  (killed child)
    spool = UsageSpool(directory, url)
    spool.write(Usage("j1:s:1:m", 0.25, 100))
    spool.write(Usage("j1:s:1:m:c1", 0.10, 40))
    spool.write(Usage("j1:s:1:m:c1", 0.30, 90))  # the call id's whole bill replaces its last
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_writers_bills_are_settled_by_whoever_adopts_its_file(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    ledger = Ledger(redis_client)
    for call_id in ("j1:s:1:m", "j1:s:1:m:c1"):
        assert ledger.reserve(call_id, 1.0, 1000, SCOPES).ok
    child = multiprocessing.get_context("spawn").Process(
        target=_bill_and_die, args=(str(tmp_path), redis_url)
    )
    child.start()
    child.join(20)
    assert child.exitcode == -signal.SIGKILL

    assert UsageSpool(tmp_path, redis_url).replay(ledger) == 2
    records = ledger.call_records(["j1:s:1:m", "j1:s:1:m:c1"])
    assert [(r.state, r.actual_usd, r.actual_tokens) for r in records.values()] == [
        ("settled", 0.25, 100),
        ("settled", 0.30, 90),
    ]
    assert ledger.job_spend("j1").spent_usd == pytest.approx(0.55)
    assert ledger.spend_report("day").fleet.reserved_usd == 0, "no hold is left"
    assert list(tmp_path.glob("*.jsonl")) == [], "the adopted file is gone"


def test_a_live_writers_file_and_another_redis_are_left_alone(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path
) -> None:
    ledger = Ledger(redis_client)
    assert ledger.reserve("j1:s:1:m", 1.0, 1000, SCOPES).ok
    live = UsageSpool(tmp_path, redis_url)
    live.write(Usage("j1:s:1:m", 0.25, 100))
    elsewhere = UsageSpool(tmp_path, redis_url + "9")
    elsewhere.write(Usage("j1:s:1:m", 0.75, 300))
    elsewhere.close()  # its writer is gone, but it charges to another Redis

    assert UsageSpool(tmp_path, redis_url).replay(ledger) == 0
    assert ledger.call_records(["j1:s:1:m"])["j1:s:1:m"].state == "reserved"
    assert len(list(tmp_path.glob("*.jsonl"))) == 2
    live.close()


def test_a_stale_entry_is_settled_by_its_own_process_once_redis_answers(
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(redis_client)
    assert ledger.reserve("j1:s:1:m", 1.0, 1000, SCOPES).ok
    spool = UsageSpool(tmp_path, redis_url)
    spool.write(Usage("j1:s:1:m", 0.25, 100))
    assert spool.replay(ledger) == 0, "a step settles its own calls first"
    monkeypatch.setattr(usage_spool, "STALE_S", 0.0)
    assert spool.replay(ledger) == 1
    assert spool.pending() == []
    assert ledger.job_spend("j1").spent_usd == pytest.approx(0.25)
    # Replaying what is already charged changes nothing.
    spool.write(Usage("j1:s:1:m", 0.25, 100))
    assert spool.replay(ledger) == 1
    assert ledger.job_spend("j1").spent_usd == pytest.approx(0.25)
    spool.close()


def test_a_long_lived_file_keeps_only_what_is_unsettled(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage_spool, "ROTATE_BYTES", 2_000)
    spool = UsageSpool(tmp_path, redis_url)
    spool.write(Usage("waiting", 0.5, 10))
    for n in range(200):
        spool.write(Usage(f"c{n}", 0.01, 10))
        spool.settled([f"c{n}"])
    [path] = tmp_path.glob("*.jsonl")
    assert path.stat().st_size < 2_000
    assert "waiting" in path.read_text()
    spool.close()
    assert path.exists(), "an unsettled entry keeps the file for adoption"
