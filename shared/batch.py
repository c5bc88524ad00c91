"""Several Redis scripts and commands in one round trip.

redis-py runs `SCRIPT EXISTS` before every pipeline that holds Script objects, which
doubles the round trips of the hot path. A Batch queues EVALSHA directly instead, and
only when Redis has lost a script (a restart) runs that one script again by itself.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError


class Batch:
    """Queue scripts and commands, then `execute()` them in one round trip."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._pipe = client.pipeline(transaction=False)
        self._scripts: dict[int, tuple[Script, list[Any], list[Any]]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def script(self, script: Script, keys: list[Any], args: list[Any]) -> int:
        """Queue a script; return the index of its reply."""
        self._pipe.evalsha(script.sha, len(keys), *keys, *args)
        self._scripts[self._size] = (script, keys, args)
        return self._next()

    def command(self, name: str, *args: Any) -> int:
        """Queue a plain command by name (e.g. "MGET"); return the index of its reply."""
        self._pipe.execute_command(name, *args)  # type: ignore[no-untyped-call]
        return self._next()

    def execute(self) -> list[Any]:
        """Run everything queued; a script Redis had lost is loaded and run again."""
        if not self._size:
            return []
        replies = list(self._pipe.execute(raise_on_error=False))
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError) and i in self._scripts:
                script, keys, args = self._scripts[i]
                replies[i] = script(keys=keys, args=args, client=self._client)
            elif isinstance(reply, Exception):
                raise reply
        return replies

    def _next(self) -> int:
        self._size += 1
        return self._size - 1
