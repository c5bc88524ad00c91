"""The CLI at its edges, without Redis: bad input names its field, a dead Redis fails fast."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fleetline.producer.cli import app
from fleetline.shared.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "ops" / "samples" / "research_brief.json"

runner = CliRunner()


def valid_spec() -> dict[str, Any]:
    return {
        "kind": "research_brief",
        "tenant": "t1",
        "budget_usd": 0.5,
        "deadline_s": 30,
        "input": {
            "question": "What did Acme Corp report?",
            "documents": [{"id": "d1", "text": "Acme Corp reported revenue of $3 billion."}],
        },
    }


def write(tmp_path: Path, spec: object) -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return str(path)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s.update(budget_usd=-1), "budget_usd"),
        (lambda s: s["input"]["documents"][0].pop("text"), "input.documents.0.text"),
        (lambda s: s.update(kind="no_such_kind"), "kind"),
        (lambda s: s.update(colour="blue"), "colour"),
    ],
)
def test_bad_spec_exits_2_naming_the_field(tmp_path: Path, change: Any, field: str) -> None:
    spec = valid_spec()
    change(spec)

    result = runner.invoke(app, ["submit", write(tmp_path, spec)])

    assert result.exit_code == 2, result.output
    assert field in result.stderr
    assert "invalid job spec" in result.stderr


def test_bad_spec_is_refused_before_redis_is_needed(tmp_path: Path) -> None:
    # No FLEETLINE_REDIS_URL at all: the spec's own fault is what the user hears about.
    spec = valid_spec()
    spec["budget_usd"] = -1

    result = runner.invoke(app, ["submit", write(tmp_path, spec)])

    assert result.exit_code == 2
    assert "budget_usd" in result.stderr
    assert "FLEETLINE_REDIS_URL" not in result.stderr


def test_unparseable_json_exits_2_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    path.write_text('{"kind": "research_brief",')

    result = runner.invoke(app, ["submit", str(path)])

    assert result.exit_code == 2
    assert "not valid JSON" in result.stderr


def test_missing_spec_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["submit", str(tmp_path / "nope.json")])

    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_spec_from_stdin_is_validated() -> None:
    spec = valid_spec()
    spec["input"]["documents"] = []

    result = runner.invoke(app, ["submit", "-"], input=json.dumps(spec))

    assert result.exit_code == 2
    assert "input.documents" in result.stderr


def test_submit_without_redis_url_is_a_config_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["submit", write(tmp_path, valid_spec())])

    assert result.exit_code == 2
    assert "FLEETLINE_REDIS_URL" in result.stderr


def test_invalid_setting_exits_2_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETLINE_SIM_ERROR_RATE", "2")

    result = runner.invoke(app, ["submit", write(tmp_path, valid_spec())])

    assert result.exit_code == 2
    assert "FLEETLINE_SIM_ERROR_RATE" in result.stderr


def test_redis_down_exits_4_quickly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A port nobody listens on: bound once to get it, then closed.
    monkeypatch.setenv("FLEETLINE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()

    result = runner.invoke(app, ["submit", write(tmp_path, valid_spec())])

    assert result.exit_code == 4, result.output
    assert time.monotonic() - started < 10
    assert "Redis unavailable" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["status", "result", "audit"])
def test_reading_a_job_with_redis_down_exits_4(
    command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETLINE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")

    result = runner.invoke(app, [command, "0" * 32, "--json"])

    assert result.exit_code == 4, result.output
    assert "Redis unavailable" in result.stderr


def test_bundled_sample_is_a_valid_spec() -> None:
    from fleetline.producer.submit import parse_spec
    from fleetline.shared.settings import FleetlineSettings

    spec, plan = parse_spec(json.loads(SAMPLE.read_text()), FleetlineSettings())

    assert spec.kind == "research_brief"
    assert len(plan.subtasks) >= 5


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("succeeded", 0),
        ("degraded", 0),
        ("running", 0),
        ("pending", 0),
        ("failed", 1),
        ("timed_out", 1),
        ("killed", 1),
        ("cancelled", 1),
    ],
)
def test_exit_code_follows_the_job_status(status: str, code: int) -> None:
    from fleetline.producer.cli_jobs import exit_code
    from fleetline.shared.schemas import JobStatus

    assert exit_code(JobStatus(status)) == code
