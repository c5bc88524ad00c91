"""The beat schedule, built from settings."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fleetline.shared.names import TASK_KILLSWITCH_CHECK, TASK_REAP_DEADLINES, TASK_SCHEDULED_RUN
from fleetline.shared.scheduled import cron_schedule
from fleetline.shared.settings import FleetlineSettings


def build_schedule(settings: FleetlineSettings) -> dict[str, dict[str, Any]]:
    """Every periodic task the fleet runs, keyed by entry name.

    Raises ConfigError naming the scheduled run whose cron expression is invalid.
    """
    check_s = settings.killswitch.interval_s
    schedule: dict[str, dict[str, Any]] = {
        "reap-deadlines": {
            "task": TASK_REAP_DEADLINES,
            "schedule": timedelta(seconds=settings.limits.reaper_interval_s),
            # A sweep missed is covered by the next; never let them pile up in a queue.
            "options": {"expires": max(1.0, settings.limits.reaper_interval_s * 4)},
        },
        "killswitch-check": {
            "task": TASK_KILLSWITCH_CHECK,
            "schedule": timedelta(seconds=check_s),
            # Likewise: a stale check is worth nothing once the next one is due.
            "options": {"expires": max(1.0, check_s * 2)},
        },
    }
    for name, run in settings.schedule.runs.items():
        schedule[f"schedule-{name}"] = {
            "task": TASK_SCHEDULED_RUN,
            "schedule": cron_schedule(run.cron, name),
            "args": (name,),
        }
    return schedule
