"""Sentry: initialised once per worker process, never at import, and never sent our data.

Prompts, documents and keys must not leave the fleet. send_default_pii stays off (the
OpenAI/Anthropic integrations record prompts when it is on), frame locals are not sent,
and `before_send` scrubs every value whose key looks like a prompt, a document, an input,
a text or a credential, at any depth: Sentry's own EventScrubber is neither recursive nor
aware of our field names.
"""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

    from fleetline.shared.killswitch import SwitchState
    from fleetline.shared.settings import FleetlineSettings

log = logging.getLogger(__name__)

FILTERED = "[Filtered]"
# Words that, as a whole word of a key (`subtask.text`, `systemPrompt`, `input_text`),
# mark its value as someone's data.
_DATA_WORDS = frozenset(
    {
        "prompt", "prompts", "document", "documents", "doc", "docs", "input", "inputs",
        "text", "texts", "content", "contents", "body", "question", "instruction",
        "messages", "completion", "output", "outputs", "brief", "findings",
        "correction", "sentences", "gist",
    }
)  # fmt: skip
# Credentials, matched anywhere in the key (`x-api-key`, `OPENAI_API_KEY`, `auth_token`).
_SECRET = re.compile(
    r"api[_-]?key|secret|passw(or)?d|authorization|auth[_-]?token|access[_-]?token|"
    r"cookie|credential|dsn|private[_-]?key",
    re.IGNORECASE,
)
_WORD = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
# Loggers whose errors are reported explicitly (with tags); their log records would only
# send the same event twice.
EXPLICITLY_REPORTED = ("fleetline.beat.enforcement",)

_initialised_pid = 0


def sensitive(key: object) -> bool:
    """Whether a value stored under this key may hold a prompt, a document or a secret."""
    name = str(key)
    if _SECRET.search(name):
        return True
    return any(w.lower() in _DATA_WORDS for w in _WORD.findall(name))


def scrub(value: Any) -> Any:
    """A copy of `value` with every sensitive key's value replaced, at any depth.

    A step's `args` (a tool's input) are data too; Celery's own `args` are not a step's.
    """
    if isinstance(value, dict):
        step = "worker_type" in value or value.get("kind") in ("agent", "tool")
        return {
            k: FILTERED if sensitive(k) or (step and k == "args") else scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value


def scrub_event(event: Event, hint: Hint) -> Event:
    """Sentry's before_send: the event with every sensitive value filtered."""
    cleaned: Event = scrub(dict(event))
    return cleaned


def init_sentry(settings: FleetlineSettings) -> bool:
    """Start Sentry in this process when a DSN is set; once per process (a fork starts over).

    Returns whether Sentry is on.
    """
    global _initialised_pid  # noqa: PLW0603 - one client per process, by design
    if settings.sentry_dsn is None:
        return False
    if _initialised_pid == os.getpid():
        return True
    # Imported here: the CLI and beat, which never report, do not pay for the import.
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.logging import ignore_logger

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        send_default_pii=False,
        # Frame locals hold prompts and documents under any name; keys cannot catch them.
        include_local_variables=False,
        max_request_body_size="never",
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        # Auto-enabling imports every SDK it can patch (anthropic alone takes seconds per
        # process) and would record model calls; Celery's task context is what we want.
        auto_enabling_integrations=False,
        integrations=[CeleryIntegration()],
    )
    for name in EXPLICITLY_REPORTED:
        ignore_logger(name)
    _initialised_pid = os.getpid()
    log.info("Sentry reporting on")
    return True


def report_switch(state: SwitchState) -> str | None:
    """Report a tripped spend kill switch as an error event tagged with its scope and window."""
    import sentry_sdk

    return sentry_sdk.capture_message(
        f"spend kill switch tripped: {state.scope} ({state.window.value}): {state.reason}",
        level="error",
        tags={"scope": state.scope, "window": state.window.value},
    )
