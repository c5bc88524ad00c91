"""The one loader of Fleetline's Lua scripts (`shared/lua/*.lua`).

Every script's header lists its KEYS, its ARGV and its reply. A script that shares helpers
with others is loaded after its library (`ledger_lib.lua`, `breaker_lib.lua`), so the
helpers are defined in the same script body Redis runs.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import redis
from redis.commands.core import Script


@cache
def script_text(name: str, library: str | None = None) -> str:
    """The source of script `name`, after `library`'s when one is named."""
    folder = resources.files("fleetline.shared").joinpath("lua")
    body = folder.joinpath(f"{name}.lua").read_text()
    return folder.joinpath(f"{library}.lua").read_text() + body if library else body


def load_script(client: redis.Redis, name: str, library: str | None = None) -> Script:
    """Script `name` registered on `client` (run by its SHA, loaded again if Redis lost it)."""
    return client.register_script(script_text(name, library))
