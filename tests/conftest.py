"""Fixtures every layer of tests shares: settings built from a clean environment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from fleetline.shared.settings import FleetlineSettings, get_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No FLEETLINE_ variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("FLEETLINE_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def settings() -> FleetlineSettings:
    return FleetlineSettings()
