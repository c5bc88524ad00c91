"""Sentry: initialised once per worker process, never at import, and never sent our data.

Prompts, documents and keys must not leave the fleet. send_default_pii stays off (the
OpenAI/Anthropic integrations record prompts when it is on), frame locals and request
bodies are not sent, and every event, transaction and breadcrumb is scrubbed twice over:

- by key: every value whose key looks like a prompt, a document, an input, a text or a
  credential, at any depth (Sentry's own EventScrubber is neither recursive nor aware of
  our field names);
- by value: free text (exception values, log messages and their parameters, breadcrumbs,
  span descriptions) names no key. Any string holding a secret of this process (its
  settings' and environment's credentials) or an excerpt of the data of the task being
  run (its arguments' texts, held back from task start to end) is filtered whole, API
  keys and URL passwords are cut out of the rest, and log messages keep their template,
  not their arguments.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr

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

# Credentials by their shape, wherever they appear in a text: our API keys, providers'
# keys, bearer tokens, a URL's password, and the input pydantic echoes in its errors.
_SHAPES = re.compile(
    r"fl_[0-9a-f]{8}_[\w-]+|sk-[\w-]{8,}|(?i:bearer)\s+\S+|(?<=://)[^/\s@]*:[^/\s@]+(?=@)|"
    r"(?<=input_value=).*?(?=, input_type=|\]$|$)",
    re.DOTALL,
)
# A text is caught by any verbatim excerpt of this many characters; shorter texts (ids,
# names) are no one's data and would filter half of every event.
_EXCERPT = 24
_MIN_HELD = 8

_initialised_pid = 0
# The credentials of this process, found at init.
_secrets: tuple[str, ...] = ()
# The texts of the task being run (its arguments' data), from task start to task end.
_held: ContextVar[tuple[str, ...]] = ContextVar("fleetline_sentry_held", default=())


def sensitive(key: object) -> bool:
    """Whether a value stored under this key may hold a prompt, a document or a secret."""
    name = str(key)
    if _SECRET.search(name):
        return True
    return any(w.lower() in _DATA_WORDS for w in _WORD.findall(name))


def scrub(value: Any) -> Any:
    """A copy of `value` with every sensitive key's value replaced, at any depth, and
    every text redacted (see `redact`).

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
    if isinstance(value, str):
        return redact(value)
    return value


def redact(text: str) -> str:
    """The text, or FILTERED when it holds a secret or an excerpt of the held data; with
    credential shapes cut out otherwise."""
    if any(_excerpt_of(known, text) for known in (*_secrets, *_held.get())):
        return FILTERED
    return _SHAPES.sub(FILTERED, text)


def _excerpt_of(known: str, text: str) -> bool:
    if len(known) <= _EXCERPT:
        return known in text
    step = _EXCERPT // 2
    return any(known[i : i + _EXCERPT] in text for i in range(0, len(known) - _EXCERPT + 1, step))


def hold_back(value: Any) -> None:
    """Treat every text under a sensitive key of `value` (a task's arguments) as data until
    `release`: any string of an event that holds an excerpt of one is filtered."""
    _held.set(tuple(_data_texts(value, False)))


def release() -> None:
    _held.set(())


def _data_texts(value: Any, under_data: bool) -> Iterator[str]:
    if isinstance(value, str):
        if under_data and len(value) >= _MIN_HELD:
            yield value
    elif isinstance(value, dict):
        step = "worker_type" in value or value.get("kind") in ("agent", "tool")
        for k, v in value.items():
            yield from _data_texts(v, under_data or sensitive(k) or (step and k == "args"))
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _data_texts(v, under_data)


def scrub_event(event: Event, hint: Hint) -> Event:
    """Sentry's before_send (and before_send_transaction): the event with every sensitive
    value filtered; a log event keeps its message's template, not its arguments."""
    entry = event.get("logentry")
    if isinstance(entry, dict) and entry.get("params"):
        event["logentry"] = {**entry, "params": [FILTERED], "formatted": entry.get("message")}
    cleaned: Event = scrub(dict(event))
    return cleaned


def scrub_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    """Sentry's before_breadcrumb: a log breadcrumb keeps its template, not its arguments."""
    record = hint.get("log_record") if hint else None
    if isinstance(record, logging.LogRecord) and record.args:
        crumb = {**crumb, "message": str(record.msg)}
    cleaned: dict[str, Any] = scrub(crumb)
    return cleaned


def process_secrets(settings: BaseModel, environ: dict[str, str]) -> tuple[str, ...]:
    """Every credential this process holds: its settings' secrets, and the values of its
    environment variables named like one."""
    found = set(_secret_values(settings))
    found.update(v for k, v in environ.items() if _SECRET.search(k) and len(v) >= _MIN_HELD)
    return tuple(sorted(found))


def _secret_values(value: Any) -> Iterator[str]:
    if isinstance(value, SecretStr):
        secret = value.get_secret_value()
        if len(secret) >= _MIN_HELD:
            yield secret
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secret_values(getattr(value, name))
    elif isinstance(value, dict):
        for v in value.values():
            yield from _secret_values(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _secret_values(v)


def init_sentry(settings: FleetlineSettings) -> bool:
    """Start Sentry in this process when a DSN is set; once per process (a fork starts over).

    Returns whether Sentry is on.
    """
    global _initialised_pid, _secrets  # noqa: PLW0603 - one client per process, by design
    if settings.sentry_dsn is None:
        return False
    if _initialised_pid == os.getpid():
        return True
    # Imported here: the CLI and beat, which never report, do not pay for the import.
    import sentry_sdk
    from celery.signals import task_postrun, task_prerun
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.logging import ignore_logger

    _secrets = process_secrets(settings, dict(os.environ))
    task_prerun.connect(_hold_task_data, weak=False)
    task_postrun.connect(_release_task_data, weak=False)
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        send_default_pii=False,
        # Frame locals hold prompts and documents under any name; keys cannot catch them.
        include_local_variables=False,
        max_request_body_size="never",
        traces_sample_rate=settings.sentry_traces_sample_rate,
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
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


def _hold_task_data(args: Any = None, kwargs: Any = None, **_: Any) -> None:
    hold_back([args, kwargs])


def _release_task_data(**_: Any) -> None:
    release()


def report_switch(state: SwitchState) -> str | None:
    """Report a tripped spend kill switch as an error event tagged with its scope and window."""
    import sentry_sdk

    return sentry_sdk.capture_message(
        f"spend kill switch tripped: {state.scope} ({state.window.value}): {state.reason}",
        level="error",
        tags={"scope": state.scope, "window": state.window.value},
    )
