"""A Celery consumer that dead-letters what it cannot run instead of dropping it.

Celery acknowledges an undecodable message and rejects an unknown task name with only a
log line; here each also lands in the dead-letter store with its reason and raw body.
Celery 5.7 also lets some malformed messages of a known task raise out of its task
handler, which stops the worker (a body that is not `[args, kwargs, embed]`, a missing
`id` header): here a message is checked before its task's strategy runs (the body's
shape, the headers Celery reads, the arguments against the task's signature, as
`apply_async` checks them on the sending side), and whatever still raises is
dead-lettered instead of stopping the worker. Items that are not messages at all never
get here: the transport (`shared/transport.py`) dead-letters them.
Enabled by `worker_consumer` in the worker app.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.app import trace
from celery.exceptions import InvalidTaskError
from celery.worker.consumer import Consumer

from fleetline.shared.deadletters import DeadLetterStore, raw_message
from fleetline.workers.runtime import get_runtime

log = logging.getLogger(__name__)

# Set on a kombu message once it is stored, so no path stores it twice.
_STORED = "_fleetline_dead_lettered"


def _store() -> DeadLetterStore:
    runtime = get_runtime()
    return DeadLetterStore(runtime.redis, runtime.settings.celery.dead_letter_max)


def dead_letter(message: Any, reason: str, detail: str) -> None:
    """Store a kombu message as a dead letter; never raise into the consumer."""
    if getattr(message, _STORED, False):
        return
    try:
        headers = dict(message.headers or {})
        delivery = dict(message.delivery_info or {})
        _store().add(
            reason=reason,
            detail=detail,
            queue=str(delivery.get("routing_key") or delivery.get("exchange") or ""),
            task=str(headers.get("task", ""))[:200],
            task_id=str(headers.get("id", ""))[:200],
            message=raw_message(
                message.body or b"",
                message.content_type,
                message.content_encoding,
                headers,
                dict(message.properties or {}),
            ),
        )
        setattr(message, _STORED, True)
    except Exception:
        log.exception("could not dead-letter a %s message", reason)


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def message_problem(task: Task, headers: dict[str, Any], body: Any) -> str | None:
    """Why a protocol-2 message of `task` cannot be run, or None: its headers, its body's
    shape, and its arguments against the task's signature."""
    if not isinstance(headers.get("id"), str):
        return "no task id ('id' header)"
    retries = headers.get("retries")
    if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool)):
        return f"'retries' header is not an integer: {_short(retries)}"
    limits = headers.get("timelimit")
    if limits is not None and not (
        isinstance(limits, list | tuple)
        and len(limits) == 2
        and all(v is None or _is_number(v) for v in limits)
    ):
        return f"'timelimit' header is not [soft, hard]: {_short(limits)}"
    if isinstance(body, dict) and "args" in body:  # Celery's hybrid form
        args, kwargs = body.get("args"), body.get("kwargs", {})
    elif isinstance(body, list | tuple) and len(body) == 3:
        args, kwargs, embed = body
        if not isinstance(embed, dict):
            return f"the body's embed is not an object: {_short(embed)}"
    else:
        return f"the body is not [args, kwargs, embed]: {_short(body)}"
    if not isinstance(args, list | tuple):
        return f"args is not a list: {_short(args)}"
    if not isinstance(kwargs, dict):
        return f"kwargs is not an object: {_short(kwargs)}"
    check = getattr(task, "__header__", None)
    if check is not None:
        try:
            check(*args, **kwargs)
        except TypeError as exc:
            return f"arguments do not fit {task.name}: {exc}"
    return None


def _checked(strategy: Callable[..., Any], task: Task) -> Callable[..., Any]:
    """The task's strategy, behind `message_problem` (raised as InvalidTaskError, which
    Celery's handler routes to `on_invalid_task`)."""

    def handle(message: Any, body: Any, *args: Any, **kwargs: Any) -> Any:
        if body is None:  # protocol 2: the arguments are the message's body
            problem = message_problem(task, dict(message.headers or {}), message.payload)
            if problem:
                raise InvalidTaskError(problem)
        return strategy(message, body, *args, **kwargs)

    return handle


class DeadLetteringConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, with every refusal path routed to the dead-letter store."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        dead_letter(message, "undecodable", f"{type(exc).__name__}: {exc}")
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        dead_letter(message, "unknown_message", "not a Celery task message")
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        dead_letter(message, "unknown_task", f"{type(exc).__name__}: {exc}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        dead_letter(message, "invalid_task", f"{type(exc).__name__}: {exc}")
        super().on_invalid_task(body, message, exc)

    def update_strategies(self) -> None:
        super().update_strategies()
        for name, strategy in list(self.strategies.items()):
            self.strategies[name] = _checked(strategy, self.app.tasks[name])
            # Celery's consumer module took `build_tracer` when this module imported it,
            # before Sentry wrapped it at worker_init: through the module, each task's
            # tracer is the wrapped one (its transaction, its scope), as in a pool child.
            task = self.app.tasks[name]
            task.__trace__ = trace.build_tracer(
                name, task, self.app.loader, self.hostname, app=self.app
            )

    def create_task_handler(self, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            # Celery 5.7 lets what its handler does not expect raise into the consumer:
            # an error that is not a connection error stops the worker, and KeyError (a
            # "connection error" of kombu 5.7's Redis transport) restarts the consumer,
            # which restores the message and takes it again, forever. Only real connection
            # errors go on; anything else dead-letters the message and rejects it.
            errors = tuple(getattr(self, "connection_errors", ()) or ())
            try:
                return handle(message)
            except Exception as exc:
                if isinstance(exc, errors) and not isinstance(exc, LookupError):
                    raise
                log.exception("a message could not be taken; dead-lettering it")
                dead_letter(message, "invalid_message", f"{type(exc).__name__}: {exc}"[:2000])
                if not message.acknowledged:
                    message.reject_log_error(log, errors)
                return None

        return on_task_received
