"""The beat schedule, built from settings."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared.names import TASK_REAP_DEADLINES
from shared.settings import FleetlineSettings


def build_schedule(settings: FleetlineSettings) -> dict[str, dict[str, Any]]:
    """Every periodic task the fleet runs, keyed by entry name."""
    return {
        "reap-deadlines": {
            "task": TASK_REAP_DEADLINES,
            "schedule": timedelta(seconds=settings.limits.reaper_interval_s),
            # A sweep missed is covered by the next; never let them pile up in a queue.
            "options": {"expires": max(1.0, settings.limits.reaper_interval_s * 4)},
        },
    }
