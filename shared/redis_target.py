"""Where Redis is: one server (`redis://`, `rediss://`, `unix://`) or a Sentinel group.

Celery and kombu take Sentinel as `sentinel://h1:26379;sentinel://h2:26379` plus the
master's name in their transport options; redis-py needs a `Sentinel` object asked for
the master. A RedisTarget holds both views, so every client of the fleet (broker, result
backend, state store, breakers, RedBeat) follows the same master through a failover.
Nothing here reads settings: the breakers' store, below settings, builds clients too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import redis
from redis.sentinel import Sentinel

SENTINEL_SCHEME = "sentinel"
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class RedisTarget:
    """A Redis URL (credentials in it) and, for Sentinel URLs, the master's name."""

    url: str
    sentinel_master: str | None = None
    # The sentinels' own password, when they require one (the URL's is the master's).
    sentinel_password: str | None = None

    @property
    def sentinel(self) -> bool:
        return urlsplit(self.parts[0]).scheme == SENTINEL_SCHEME

    @property
    def parts(self) -> list[str]:
        return [part.strip() for part in self.url.split(";") if part.strip()]

    def sentinels(self) -> list[tuple[str, int]]:
        """(host, port) of every sentinel of the URL."""
        found = []
        for part in self.parts:
            where = urlsplit(part)
            found.append((where.hostname or "localhost", where.port or SENTINEL_PORT))
        return found

    def master_options(self) -> dict[str, Any]:
        """The master's database and credentials, as the first sentinel URL gives them."""
        where = urlsplit(self.parts[0])
        db = where.path.strip("/")
        options: dict[str, Any] = {"db": int(db) if db.isdigit() else 0}
        if where.username:
            options["username"] = unquote(where.username)
        if where.password:
            options["password"] = unquote(where.password)
        return options

    def sentinel_kwargs(self) -> dict[str, Any] | None:
        return {"password": self.sentinel_password} if self.sentinel_password else None

    def client(self, **options: Any) -> redis.Redis:
        """A redis-py client with `options` (timeouts, pool size, retry) on the master."""
        if not self.sentinel:
            return redis.Redis.from_url(self.url, **options)
        pool_size = options.pop("max_connections", None)
        group = Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            self.sentinels(),
            sentinel_kwargs=self.sentinel_kwargs(),
            socket_timeout=options.get("socket_timeout"),
            socket_connect_timeout=options.get("socket_connect_timeout"),
        )
        if pool_size is not None:
            options["max_connections"] = pool_size
        master: redis.Redis = group.master_for(  # type: ignore[no-untyped-call, unused-ignore]
            self.require_master(), **self.master_options(), **options
        )
        return master

    def require_master(self) -> str:
        if not self.sentinel_master:
            raise ValueError(
                "a sentinel:// Redis URL needs FLEETLINE_REDIS_SENTINEL_MASTER (the master's name)"
            )
        return self.sentinel_master


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """`url` with this username and password, on every `;` part that names none."""
    if not password and not username:
        return url
    parts = []
    for part in url.split(";"):
        where = urlsplit(part.strip())
        if where.scheme == "unix" or where.username or where.password or not where.hostname:
            parts.append(part.strip())
            continue
        user = quote(username or "", safe="")
        secret = f":{quote(password, safe='')}" if password else ""
        host = where.hostname + (f":{where.port}" if where.port else "")
        parts.append(urlunsplit(where._replace(netloc=f"{user}{secret}@{host}")))
    return ";".join(parts)
