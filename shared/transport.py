"""kombu's Redis transport, with one fix for losing Redis while messages are unacked.

On a lost connection kombu closes the channel and tries to hand its unacked messages
back, but by then the connection's settings are gone, and the AttributeError it hits
is not one the worker ignores: the worker process exits (seen on kombu 5.7.0 with a
Redis restart mid-run). Here that case is a connection error, which the worker rides
out like any other; the messages come back by the visibility-timeout scan instead.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("connection closed while restoring unacked messages")
        return super()._connparams(asynchronous)  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    Channel = Channel
