"""Secret settings from files, credentials put into Redis URLs, and Sentinel targets."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetline.shared.celery_app import make_celery, redis_target
from fleetline.shared.errors import ConfigError
from fleetline.shared.fleet.loading import load_fleet
from fleetline.shared.redis_target import RedisTarget, with_credentials
from fleetline.shared.secret_files import read_secret_files
from fleetline.shared.settings import FleetlineSettings, RedisSettings
from fleetline.shared.transport import SentinelTransport


def test_a_secret_is_read_from_its_file_without_the_trailing_newline(tmp_path: Path) -> None:
    key = tmp_path / "openai"
    key.write_text("sk-test-123\n")
    env = {"FLEETLINE_OPENAI_API_KEY_FILE": str(key), "FLEETLINE_SIM_OUTAGE_FILE": "/x"}
    assert read_secret_files(env) == ["FLEETLINE_OPENAI_API_KEY"]
    assert env["FLEETLINE_OPENAI_API_KEY"] == "sk-test-123"
    assert "FLEETLINE_SIM_OUTAGE" not in env, "only secret settings have a _FILE form"
    # A worker started with this environment reads it again without complaint.
    assert read_secret_files(env) == ["FLEETLINE_OPENAI_API_KEY"]


def test_both_forms_or_an_unreadable_file_are_refused_naming_the_variable(
    tmp_path: Path,
) -> None:
    key = tmp_path / "key"
    key.write_text("a")
    both = {"FLEETLINE_SENTRY_DSN": "x", "FLEETLINE_SENTRY_DSN_FILE": str(key)}
    with pytest.raises(ConfigError, match="FLEETLINE_SENTRY_DSN and FLEETLINE_SENTRY_DSN_FILE"):
        read_secret_files(both)
    missing = {"FLEETLINE_REDIS_PASSWORD_FILE": str(tmp_path / "nope")}
    with pytest.raises(ConfigError, match="FLEETLINE_REDIS_PASSWORD_FILE: cannot read"):
        read_secret_files(missing)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        read_secret_files({"FLEETLINE_REDIS_URL_FILE": str(tmp_path / "empty")})


def test_credentials_go_into_urls_that_name_none() -> None:
    assert with_credentials("redis://h:6379/2", "fleet", "p@ss/w") == (
        "redis://fleet:p%40ss%2Fw@h:6379/2"
    )
    assert with_credentials("rediss://h:6380/0?ssl_cert_reqs=required", None, "pw") == (
        "rediss://:pw@h:6380/0?ssl_cert_reqs=required"
    )
    assert with_credentials("redis://:own@h/0", "fleet", "pw") == "redis://:own@h/0"
    assert with_credentials("sentinel://a:26379;sentinel://b:26380", None, "pw") == (
        "sentinel://:pw@a:26379;sentinel://:pw@b:26380"
    )


def test_a_sentinel_url_needs_its_master_and_configures_every_client() -> None:
    url = "sentinel://:pw@a:26379/3;sentinel://b"
    with pytest.raises(ConfigError, match="FLEETLINE_REDIS_SENTINEL_MASTER"):
        redis_target(FleetlineSettings(redis=RedisSettings(url=url)))
    settings = FleetlineSettings(redis=RedisSettings(url=url, sentinel_master="fleet"))
    target = redis_target(settings)
    assert target == RedisTarget(url, "fleet")
    assert target.sentinels() == [("a", 26379), ("b", 26379)]
    assert target.master_options() == {"db": 3, "password": "pw"}
    app = make_celery(settings.bind(load_fleet(None)), send_only=True)
    assert app.conf.broker_transport_options["master_name"] == "fleet"
    assert app.conf.result_backend_transport_options["master_name"] == "fleet"
    with app.connection_for_write() as connection:
        assert type(connection.transport) is SentinelTransport, "the crash-containing one"
        assert connection.as_uri().startswith("sentinel://"), "Flower knows it by its scheme"
    assert type(app.backend).__name__ == "SendOnlySentinelBackend"
