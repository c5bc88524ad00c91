"""FLEETLINE_WORKER_GUARDS: which guards a run passes (all by default), and start-up errors
that name the setting and the unknown guard."""

from __future__ import annotations

import pytest

from fleetline.shared.errors import ConfigError
from fleetline.shared.settings import GUARD_NAMES, load_settings
from fleetline.workers.run import default_guards, tool_guards

AGENT_GUARDS = [
    "RecordedGuard",
    "CancelledGuard",
    "DeadlineGuard",
    "FairShareGuard",
    "CrashGuard",
    "KillSwitchGuard",
    "BreakerGuard",
    "BudgetGuard",
    "CacheGuard",
]
TOOL_GUARDS = AGENT_GUARDS[:5]


def _names(guards: list[object]) -> list[str]:
    return [type(g).__name__ for g in guards]


def _with(monkeypatch: pytest.MonkeyPatch, value: str) -> list[list[str]]:
    monkeypatch.setenv("FLEETLINE_WORKER_GUARDS", value)
    settings = load_settings()
    return [_names(default_guards(settings)), _names(tool_guards(settings))]


def test_every_guard_runs_by_default() -> None:
    settings = load_settings()
    assert settings.worker_guards == "all"
    assert _names(default_guards(settings)) == AGENT_GUARDS
    assert _names(tool_guards(settings)) == TOOL_GUARDS
    # Without settings passed in, the process's own (the same defaults here).
    assert _names(default_guards()) == AGENT_GUARDS


def test_none_turns_every_guard_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _with(monkeypatch, "none") == [[], []]


def test_a_list_keeps_the_run_order_whatever_order_it_names_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    agent, tool = _with(monkeypatch, " budget, recorded ,cache")
    assert agent == ["RecordedGuard", "BudgetGuard", "CacheGuard"]
    # A tool has no budget or cache guard: only what it has of the list is on.
    assert tool == ["RecordedGuard"]


def test_each_guard_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, cls in zip(GUARD_NAMES, AGENT_GUARDS, strict=True):
        assert _with(monkeypatch, name)[0] == [cls]


def test_the_process_settings_decide_when_none_are_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLEETLINE_WORKER_GUARDS", "deadline")
    assert _names(default_guards()) == ["DeadlineGuard"]
    assert _names(tool_guards()) == ["DeadlineGuard"]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("budget,bugdet", "unknown guard 'bugdet'"),
        ("all,cache", '"all" and "none" stand alone'),
        (" , ", "no guard named"),
    ],
)
def test_an_unknown_guard_is_refused_at_start_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    monkeypatch.setenv("FLEETLINE_WORKER_GUARDS", value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "FLEETLINE_WORKER_GUARDS" in str(info.value)
    assert says in str(info.value)
