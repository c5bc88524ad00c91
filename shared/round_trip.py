"""Several Redis scripts and commands in one round trip.

redis-py sends `SCRIPT EXISTS` before every pipeline that holds scripts, which doubles
the round trips of the hot path. A RoundTrip is a pipeline that skips that check; when Redis
has lost a script (it restarted) the reply says so, and just that script is loaded and
run again on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import NoScriptError


class RoundTrip(Pipeline):
    """Queue scripts (`Script(..., client=trip)`) and commands; `execute()` runs them once."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client.connection_pool, client.response_callbacks, False, None)
        self._client = client

    def load_scripts(self) -> None:
        # Scripts are assumed loaded; a NoScriptError reply is repaired in execute().
        return None

    def script(self, script: Script, keys: list[Any], args: list[Any]) -> int:
        """Queue a script; return the index of its reply."""
        script(keys=keys, args=args, client=self)
        return len(self.command_stack) - 1

    def queue(self, name: str, *args: Any) -> int:
        """Queue a plain command by name (e.g. "INCR"); return the index of its reply."""
        self.execute_command(name, *args)  # type: ignore[no-untyped-call]
        return len(self.command_stack) - 1

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Run everything queued; raise the first error, after repairing lost scripts.

        A repaired script runs after the rest of the trip: guards never depend on order.
        """
        stack = [args for args, _ in self.command_stack]
        scripts = {s.sha: s for s in self.scripts}
        replies = list(super().execute(raise_on_error=False))
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError) and stack[i][0] == "EVALSHA":
                sha, *rest = stack[i][1:]
                script = scripts[sha]
                script.sha = self._client.script_load(script.script)
                replies[i] = self._client.evalsha(script.sha, *rest)
            elif isinstance(reply, Exception) and raise_on_error:
                raise reply
        return replies


def one_reply(client: redis.Redis, queue: Callable[[RoundTrip], int]) -> Any:
    """Run what `queue` puts on a round trip of its own; return the reply at its index.

    Every `queue_*` method of the Redis helpers takes a RoundTrip and returns the index of
    the reply to read; their one-off forms go through here.
    """
    trip = RoundTrip(client)
    index = queue(trip)
    return trip.execute()[index]
