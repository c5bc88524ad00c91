"""Scheduled runs: their settings (FLEETLINE_SCHEDULE_RUNS) and their cron expressions.

Beat reads these to schedule the runs; the producer side (`fleetline.producer.scheduled_runs`)
submits each run's jobs.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from celery.schedules import ParseException, crontab
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetline.shared.errors import ConfigError

if TYPE_CHECKING:
    from fleetline.shared.settings import FleetlineSettings

_NAME = r"^[A-Za-z0-9_.-]{1,64}$"


class ScheduledRun(BaseModel):
    """One scheduled run: when (cron, UTC), where its jobs come from, and what they may cost."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str
    source: Literal["folder", "jsonl"]
    path: str
    kind: str = "research_brief"
    # Folder source: the question the job answers over the folder's documents.
    question: str | None = None
    # Folder jobs, and JSONL lines that name none.
    tenant: str = "scheduled"
    budget_usd: float = Field(default=1.0, gt=0)
    latency_profile: str | None = "batch"
    deadline_s: float | None = Field(default=None, gt=0)
    priority: int = Field(default=2, ge=0, le=9)
    # How long a run waits for its jobs; None: until their latest deadline plus a grace.
    wait_s: float | None = Field(default=None, gt=0)

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        try:
            cron_schedule(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value


class ScheduleSettings(BaseSettings):
    """Scheduled runs by name, e.g. FLEETLINE_SCHEDULE_RUNS='{"nightly": {...}}'."""

    model_config = SettingsConfigDict(env_prefix="FLEETLINE_SCHEDULE_", extra="ignore")

    runs: dict[str, ScheduledRun] = Field(default_factory=dict)

    @field_validator("runs")
    @classmethod
    def _valid_names(cls, value: dict[str, ScheduledRun]) -> dict[str, ScheduledRun]:
        for name in value:
            if not re.match(_NAME, name):
                raise ValueError(f"batch name {name!r}: 1-64 chars of [A-Za-z0-9_.-]")
        return value


class UnknownSchedule(ConfigError):
    """No scheduled run has that name."""


def get_run(settings: FleetlineSettings, name: str) -> ScheduledRun:
    """The run named `name`, or UnknownSchedule listing the known ones."""
    runs = settings.schedule.runs
    if name not in runs:
        known = ", ".join(sorted(runs)) or "none configured (FLEETLINE_SCHEDULE_RUNS)"
        raise UnknownSchedule(f"no scheduled run {name!r} (known: {known})")
    return runs[name]


def cron_schedule(expr: str, name: str | None = None) -> crontab:
    """A crontab from five fields (minute hour day-of-month month day-of-week), UTC."""
    fields = expr.split()
    try:
        if len(fields) != 5:
            raise ValueError(f"needs 5 fields, got {len(fields)}")
        minute, hour, day_of_month, month, day_of_week = fields
        return crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month,
            day_of_week=day_of_week,
        )
    except (ValueError, ParseException) as exc:
        run = f"scheduled run {name!r}: " if name else ""
        raise ConfigError(f"{run}invalid cron expression {expr!r}: {exc}") from None
