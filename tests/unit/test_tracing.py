"""What reaches Sentry: prompts, documents and keys are scrubbed at any depth."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from fleetline.shared.settings import FleetlineSettings
from fleetline.shared.tracing import FILTERED, init_sentry, scrub, scrub_event, sensitive

DOCUMENT = "Acme Corp's confidential merger memo"


def event() -> dict[str, Any]:
    """An event shaped like the Celery integration's, around a subtask payload."""
    return {
        "level": "error",
        "message": "spend kill switch tripped: fleet (day)",
        "tags": {"scope": "fleet", "window": "day"},
        "contexts": {"runtime": {"name": "CPython"}, "trace": {"trace_id": "abc"}},
        "extra": {
            "celery-job": {
                "task_name": "extraction",
                "args": [
                    {
                        "job_id": "j1",
                        "tenant": "t1",
                        "subtask": {"id": "extract-d0", "text": DOCUMENT, "instruction": "x"},
                    }
                ],
                "kwargs": {
                    "context": {
                        "then": {"id": "synthesis", "text": DOCUMENT, "instruction": DOCUMENT},
                        "synthesis": {"prompt": DOCUMENT},
                        "documents": [{"id": "d0", "text": DOCUMENT}],
                    }
                },
            },
            "request": {"headers": {"X-Api-Key": "sk-live-123", "Authorization": "Bearer t"}},
            "settings": {"openai_api_key": "sk-1", "sentry_dsn": "https://k@o/1"},
            "messages": [{"role": "user", "content": DOCUMENT}],
        },
        "breadcrumbs": {"values": [{"message": "ok", "data": {"input_text": DOCUMENT}}]},
    }


def test_before_send_scrubs_nested_prompts_documents_and_keys() -> None:
    cleaned = scrub_event(event(), {})  # type: ignore[arg-type]

    assert DOCUMENT not in repr(cleaned)
    assert "sk-live-123" not in repr(cleaned) and "sk-1" not in repr(cleaned)
    job = cleaned["extra"]["celery-job"]
    assert job["args"][0]["subtask"]["text"] == FILTERED
    assert job["args"][0]["subtask"]["instruction"] == FILTERED
    assert job["kwargs"]["context"]["synthesis"]["prompt"] == FILTERED
    then = job["kwargs"]["context"]["then"]
    assert (then["id"], then["text"], then["instruction"]) == ("synthesis", FILTERED, FILTERED)
    assert job["kwargs"]["context"]["documents"] == FILTERED
    assert cleaned["extra"]["request"]["headers"] == {
        "X-Api-Key": FILTERED,
        "Authorization": FILTERED,
    }
    assert cleaned["extra"]["settings"] == {"openai_api_key": FILTERED, "sentry_dsn": FILTERED}
    assert cleaned["breadcrumbs"]["values"][0]["data"]["input_text"] == FILTERED


def test_before_send_keeps_what_is_needed_to_triage() -> None:
    original = event()
    cleaned = scrub_event(original, {})  # type: ignore[arg-type]

    assert cleaned["message"] == original["message"]
    assert cleaned["tags"] == {"scope": "fleet", "window": "day"}
    assert cleaned["contexts"] == original["contexts"]
    assert cleaned["extra"]["celery-job"]["task_name"] == "extraction"
    assert cleaned["extra"]["celery-job"]["args"][0]["job_id"] == "j1"
    assert original["extra"]["celery-job"]["args"][0]["subtask"]["text"] == DOCUMENT, (
        "the event passed in is not modified"
    )


@pytest.mark.parametrize(
    ("key", "hidden"),
    [
        ("prompt", True),
        ("systemPrompt", True),
        ("document_text", True),
        ("DOCUMENTS", True),
        ("input", True),
        ("api_key", True),
        ("x-api-key", True),
        ("ANTHROPIC_API_KEY", True),
        ("password", True),
        ("tokens_in", False),
        ("context", False),
        ("contexts", False),
        ("message", False),
        ("job_id", False),
        ("tenant", False),
        ("task_name", False),
    ],
)
def test_which_keys_are_sensitive(key: str, hidden: bool) -> None:
    assert sensitive(key) is hidden


def test_scrub_walks_lists_and_tuples() -> None:
    assert scrub(({"text": "a"}, [{"b": {"prompt": "c"}}])) == [
        {"text": FILTERED},
        [{"b": {"prompt": FILTERED}}],
    ]


def test_without_a_dsn_sentry_stays_off(settings: FleetlineSettings) -> None:
    assert settings.sentry_dsn is None
    assert init_sentry(settings) is False


def test_the_dsn_is_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETLINE_SENTRY_DSN", "http://public@127.0.0.1:9/1")
    settings = FleetlineSettings()
    assert isinstance(settings.sentry_dsn, SecretStr)
    assert "public" not in repr(settings)


def test_a_tool_steps_arguments_are_scrubbed_too() -> None:
    secret = "jane.doe@example.com"
    tool_event = {
        "extra": {
            "celery-job": {
                "task_name": "crm_lookup",
                "args": [
                    {
                        "job_id": "j1",
                        "subtask": {"id": "lookup-1", "kind": "tool", "args": {"email": secret}},
                    }
                ],
            }
        }
    }
    cleaned = scrub_event(tool_event, {})  # type: ignore[arg-type]
    assert cleaned["extra"]["celery-job"]["args"][0]["job_id"] == "j1"
    assert secret not in repr(cleaned)
