"""Logging that stays readable: housekeeping tasks that run every second do not flood it."""

from __future__ import annotations

import logging
from collections.abc import Iterable

# Loggers where Celery reports every task received, run, and (on beat) sent.
_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "celery.beat")


class _Quiet(logging.Filter):
    def __init__(self, names: frozenset[str]) -> None:
        super().__init__()
        self._names = names

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        return not any(name in message for name in self._names)


def quiet_periodic_tasks(task_names: Iterable[str]) -> None:
    """Drop INFO-and-below task lines about these tasks; warnings and errors still show."""
    quiet = _Quiet(frozenset(task_names))
    for name in _TASK_LOGGERS:
        logging.getLogger(name).addFilter(quiet)
