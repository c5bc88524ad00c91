"""What reaches Sentry: prompts, documents and keys are scrubbed at any depth."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from pydantic import SecretStr

from fleetline.shared.sentry import (
    FILTERED,
    hold_back,
    init_sentry,
    process_secrets,
    redact,
    release,
    scrub,
    scrub_breadcrumb,
    scrub_event,
    sensitive,
)
from fleetline.shared.settings import FleetlineSettings

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


def test_free_text_holding_held_data_or_a_secret_is_filtered_whole() -> None:
    memo = "The board approved the Acme merger at a price of 41 dollars a share."
    hold_back([{"job_id": "j1", "subtask": {"worker_type": "extraction", "text": memo}}])
    try:
        assert redact(f"could not parse {memo[10:50]!r}") == FILTERED, "an excerpt is enough"
        assert redact("extraction step j1 failed") == "extraction step j1 failed"
    finally:
        release()
    assert redact(f"could not parse {memo[10:50]!r}") != FILTERED, "held for the task only"


def test_credential_shapes_are_cut_out_of_any_text() -> None:
    text = "401 for fl_0123abcd_S3cr3t-key, sk-proj-abcdefgh12, Bearer xyz to redis://u:pw@h/0"
    assert redact(text) == f"401 for {FILTERED}, {FILTERED}, {FILTERED} to redis://{FILTERED}@h/0"
    error = "1 validation error\n  x [type=string_type, input_value={'a': 1}, input_type=dict]"
    assert f"input_value={FILTERED}, input_type=dict" in redact(error)


def test_log_events_and_breadcrumbs_keep_their_template_not_their_arguments() -> None:
    entry = {"message": "read %s", "params": ["secret memo"], "formatted": "read secret memo"}
    event: Any = {"logentry": entry}
    assert scrub_event(event, {})["logentry"] == {
        "message": "read %s",
        "params": [FILTERED],
        "formatted": "read %s",
    }
    record = logging.LogRecord("x", logging.WARNING, "f", 1, "read %s", ("secret memo",), None)
    crumb = scrub_breadcrumb({"message": "read secret memo", "data": {}}, {"log_record": record})
    assert crumb["message"] == "read %s"


def test_process_secrets_are_the_settings_and_the_environment_credentials() -> None:
    settings = FleetlineSettings(sentry_dsn=SecretStr("https://k@sentry.example/1"))
    found = process_secrets(settings, {"PAYMENTS_API_KEY": "pk_live_123456", "HOME": "/root"})
    assert "https://k@sentry.example/1" in found and "pk_live_123456" in found
    assert "/root" not in found
