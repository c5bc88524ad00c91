"""Load a fleet by name, like Celery's `-A`: `FLEETLINE_APP=module:attribute`.

The module is imported from the current directory first (as `celery -A` does), so a
team's fleet module beside its spec files needs no installing.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading

from fleetline.shared.errors import ConfigError
from fleetline.shared.fleet.definition import FleetDefinition

# The example fleet a bare `fleetline` command runs: research_brief and its specialists.
DEFAULT_APP = "fleetline.examples.research:fleet"

_loaded: dict[str, FleetDefinition] = {}
_lock = threading.Lock()


def load_fleet(ref: str | None = None) -> FleetDefinition:
    """The fleet `ref` names (`module:attribute`; default: the example fleet), loaded once.

    Raises:
        ConfigError: naming the app when it does not import, lacks the attribute, or is
            not a Fleet.
    """
    ref = ref or DEFAULT_APP
    with _lock:
        found = _loaded.get(ref)
        if found is None:
            found = _loaded[ref] = _import(ref)
        return found


def _import(ref: str) -> FleetDefinition:
    module_name, sep, attribute = ref.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"FLEETLINE_APP={ref}: expected module:attribute (e.g. acme:fleet)")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ConfigError as exc:
        raise ConfigError(f"FLEETLINE_APP={ref}: {exc}") from None
    except Exception as exc:
        raise ConfigError(
            f"FLEETLINE_APP={ref}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        found = getattr(module, attribute)
    except AttributeError:
        raise ConfigError(f"FLEETLINE_APP={ref}: {module_name} has no {attribute!r}") from None
    if not isinstance(found, FleetDefinition):
        raise ConfigError(
            f"FLEETLINE_APP={ref}: {attribute} is a {type(found).__name__}, not a fleetline.Fleet"
        )
    if not found.worker_types:
        raise ConfigError(f"FLEETLINE_APP={ref}: fleet {found.name} declares no agent or tool")
    return found
