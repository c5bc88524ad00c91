"""Production Redis set-ups with real workers: an ACL user whose password is read from a
file, and a Redis Sentinel group the test starts."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from fleetline.shared import keys
from fleetline.shared.embedded_redis import EmbeddedRedis, free_port, server_binary, start_redis
from fleetline.shared.schemas import JobStatus
from tests.integration.conftest import FleetFactory
from tests.integration.test_cost_control import brief

pytestmark = pytest.mark.integration


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = start_redis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def sentinel(private_redis: EmbeddedRedis, tmp_path: Path) -> Iterator[int]:
    """A sentinel watching `private_redis` as master `fleet`; yields its port."""
    port = free_port()
    folder = tmp_path / "sentinel"
    folder.mkdir()
    config = folder / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
        f"sentinel monitor fleet 127.0.0.1 {private_redis.port} 1\n"
        "sentinel down-after-milliseconds fleet 5000\n"
    )
    process = subprocess.Popen(
        [server_binary(), str(config), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = redis.Redis(port=port, socket_timeout=0.5, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while True:
        try:
            if client.execute_command("SENTINEL", "get-master-addr-by-name", "fleet"):
                break
        except redis.ConnectionError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "sentinel did not start"
        time.sleep(0.1)
    client.close()
    yield port
    process.terminate()
    process.wait(timeout=5)


def test_a_fleet_on_an_acl_user_whose_password_is_read_from_a_file(
    start_fleet: FleetFactory,
    private_redis: EmbeddedRedis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    admin = redis.Redis(port=private_redis.port)
    admin.execute_command("ACL", "SETUSER", "fleet", "on", ">s3cret-pw", "~*", "&*", "+@all")
    admin.execute_command("ACL", "SETUSER", "default", "off")  # nobody else gets in
    secret = tmp_path / "redis-password"
    secret.write_text("s3cret-pw\n")
    # Read from the file into the environment: restored after the test.
    monkeypatch.setenv("FLEETLINE_REDIS_PASSWORD", "")
    url = f"redis://127.0.0.1:{private_redis.port}/0"
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(url).ping()

    fleet = start_fleet(
        FLEETLINE_REDIS_URL=url,
        FLEETLINE_REDIS_USERNAME="fleet",
        FLEETLINE_REDIS_PASSWORD_FILE=str(secret),
    )
    job = fleet.wait(fleet.producer.submit(brief(2)).job_id)
    assert job.status is JobStatus.SUCCEEDED, fleet.logs()
    locked = redis.Redis.from_url(url, username="fleet", password="s3cret-pw")
    assert locked.exists(keys.job(job.job_id))
    assert all(fleet.fleet.alive().values()), fleet.logs()


def test_a_fleet_on_a_redis_sentinel_group(
    start_fleet: FleetFactory, private_redis: EmbeddedRedis, sentinel: int
) -> None:
    fleet = start_fleet(
        FLEETLINE_REDIS_URL=f"sentinel://127.0.0.1:{sentinel}/0",
        FLEETLINE_REDIS_SENTINEL_MASTER="fleet",
    )
    jobs = [fleet.wait(fleet.producer.submit(brief(2)).job_id) for _ in range(2)]
    assert [j.status for j in jobs] == [JobStatus.SUCCEEDED] * 2, fleet.logs()
    # Everything went to the master the sentinel named.
    master = redis.Redis(port=private_redis.port)
    assert master.exists(keys.job(jobs[0].job_id))
    # Beat (RedBeat through the sentinel too) keeps running and holds its lock.
    assert all(fleet.fleet.alive().values()), fleet.logs()
    assert master.exists("fl:redbeat::lock")
