"""The CLI at its edges, without Redis: bad input names its field, a dead Redis fails fast."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from fleetline.producer import cli_render as render
from fleetline.producer.cli import app
from fleetline.shared.embedded_redis import free_port
from fleetline.shared.schemas import JobResult, JobStatus

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "ops" / "samples" / "research_brief.json"

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_local_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `fleetline up` someone runs in the repository is never found by these tests."""
    monkeypatch.setenv("FLEETLINE_REDIS_EMBEDDED_DIR", str(tmp_path / "redis"))


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
    from fleetline.shared.settings import load_settings

    spec, plan = parse_spec(json.loads(SAMPLE.read_text()), load_settings())

    assert spec.kind == "research_brief"
    assert len(plan.subtasks) >= 5
    assert plan.then.worker_type == "synthesis"


@pytest.mark.parametrize("flag", ["--app", "-A"])
def test_an_app_that_does_not_load_exits_2_naming_it(tmp_path: Path, flag: str) -> None:
    result = runner.invoke(app, ["submit", write(tmp_path, valid_spec()), flag, "nope:fleet"])

    assert result.exit_code == 2, result.output
    assert "nope:fleet" in result.stderr


def test_the_app_may_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETLINE_APP", "fleetline.examples.research:missing")

    result = runner.invoke(app, ["submit", write(tmp_path, valid_spec())])

    assert result.exit_code == 2, result.output
    assert "fleetline.examples.research:missing" in result.stderr


def test_a_kind_of_another_app_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    spec = valid_spec()
    spec["kind"] = "weekly_digest"

    result = runner.invoke(
        app, ["submit", write(tmp_path, spec), "--app", "fleetline.examples.research:fleet"]
    )

    assert result.exit_code == 2, result.output
    assert "weekly_digest" in result.stderr
    assert "research_brief" in result.stderr


def test_a_worker_for_an_unknown_agent_exits_2_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLINE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")

    result = runner.invoke(app, ["worker", "--agents", "extraction, summariser"])

    assert result.exit_code == 2, result.output
    assert "'summariser'" in result.stderr
    assert "--agents" in result.stderr
    assert "extraction" in result.stderr  # among the known ones


def _rendered(job: JobResult) -> str:
    console = Console(record=True, width=100)
    console.print(render.answer(job))
    return console.export_text()


def _job(result: dict[str, Any] | None) -> JobResult:
    return JobResult(
        job_id="j1",
        kind="research_brief",
        tenant="t1",
        status=JobStatus.DEGRADED,
        completeness=0.5,
        result=result,
    )


def test_the_answer_shown_is_the_then_steps_output() -> None:
    text = _rendered(
        _job(
            {
                "answer": {"brief": "Acme grew.", "key_points": ["Revenue rose 12%."]},
                "missing": ["classify-b"],
                "unusable": ["extract-a"],
            }
        )
    )

    assert "Acme grew." in text
    assert "Key points" in text
    assert "• Revenue rose 12%." in text
    assert "missing: classify-b" in text
    assert "unusable: extract-a" in text


@pytest.mark.parametrize("result", [None, {}, {"brief": "a top-level brief is not shown"}])
def test_without_an_answer_the_result_says_so(result: dict[str, Any] | None) -> None:
    text = _rendered(_job(result))

    assert "No answer was written." in text
    assert "top-level brief" not in text


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
