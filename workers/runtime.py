"""Per-process dependencies of a worker, built on first use in each process.

Nothing is built at import: a prefork child must not share its parent's sockets, so the
runtime is keyed by pid and rebuilt in a new process.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import cached_property

import redis
from pydantic import BaseModel
from redis.commands.core import Script

from fleetline.shared import keys, otel
from fleetline.shared.action_state import ActionStore
from fleetline.shared.breakers import FleetBreaker, RedisBreakers, breaker_name, breaker_redis
from fleetline.shared.cache import ResultCache
from fleetline.shared.celery_app import redis_target
from fleetline.shared.deadletters import DeadLetterStore
from fleetline.shared.debate_state import DebateStore
from fleetline.shared.errors import PermanentToolError
from fleetline.shared.fan_in_join import FanInClaims
from fleetline.shared.killswitch import KillSwitches
from fleetline.shared.ledger import Ledger
from fleetline.shared.models.base import ModelClient
from fleetline.shared.models.factory import build_client
from fleetline.shared.pipeline_state import PipelineStore
from fleetline.shared.redis_client import make_redis
from fleetline.shared.scripts import load_script
from fleetline.shared.settings import FleetlineSettings, get_settings
from fleetline.shared.state import StateStore
from fleetline.workers.batching import Batcher
from fleetline.workers.usage_spool import UsageSpool


@dataclass
class WorkerRuntime:
    """What a task needs from the world; tests may build one by hand."""

    settings: FleetlineSettings
    redis: redis.Redis
    store: StateStore
    _clients: dict[str, ModelClient] = field(default_factory=dict)
    _batchers: dict[tuple[str, str], Batcher] = field(default_factory=dict)
    _tool_breakers: dict[str, FleetBreaker] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def once_ttl_s(self) -> int:
        """The closing trip's once-markers live through its retries (the outage grace)."""
        return keys.closing_once_ttl_s(self.settings.redis.outage_grace_s)

    # The guards' Redis helpers hold registered scripts: build each once per process.
    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.redis, once_ttl_s=self.once_ttl_s)

    @cached_property
    def spool(self) -> UsageSpool:
        return UsageSpool(self.settings.spool_dir, redis_identity(self.redis))

    @cached_property
    def fair_share_take(self) -> Script:
        return load_script(self.redis, "fair_share_take")

    @cached_property
    def cache(self) -> ResultCache:
        return ResultCache(self.redis)

    @cached_property
    def fan_in_claims(self) -> FanInClaims:
        return FanInClaims(self.redis)

    @cached_property
    def kill_switches(self) -> KillSwitches:
        return KillSwitches(self.redis)

    @cached_property
    def breakers(self) -> RedisBreakers:
        return RedisBreakers(self.redis, self.settings.breaker, self.once_ttl_s)

    @cached_property
    def pipelines(self) -> PipelineStore:
        return PipelineStore(self.redis, self.settings.limits.finished_ttl_s)

    @cached_property
    def debates(self) -> DebateStore:
        return DebateStore(self.redis, self.settings.limits.finished_ttl_s)

    @cached_property
    def actions(self) -> ActionStore:
        return ActionStore(self.redis, self.settings.limits.finished_ttl_s)

    @cached_property
    def dead_letters(self) -> DeadLetterStore:
        return DeadLetterStore(self.redis, self.settings.celery.dead_letter_max)

    @cached_property
    def tool_breaker_store(self) -> RedisBreakers:
        # Its own client with the breakers' short timeouts, so `on_redis_down` decides
        # within a fraction of a second when Redis is away.
        client = breaker_redis(redis_target(self.settings), self.settings.breaker)
        return RedisBreakers(client, self.settings.breaker, self.once_ttl_s)

    def tool_breaker(self, tool: str) -> FleetBreaker:
        """The fleet-wide breaker of one tool (`<tool>:tool`), a pybreaker CircuitBreaker.

        Failures of the tool's own making (PermanentToolError: bad arguments, a bug) do not
        open it; timeouts and its `retry_on` errors do.
        """
        with self._lock:
            found = self._tool_breakers.get(tool)
            if found is None:
                found = self._tool_breakers[tool] = FleetBreaker(
                    self.tool_breaker_store,
                    breaker_name(tool, "tool"),
                    exclude=[PermanentToolError],
                    # The call that trips it did run and fail: record that failure.
                    throw_new_error_on_trip=False,
                )
            return found

    def batcher(self, worker_type: str, model: str, schema: type[BaseModel]) -> Batcher:
        """The batcher of one worker type and model, built once per process."""
        with self._lock:
            found = self._batchers.get((worker_type, model))
            if found is None:
                policy = self.settings.worker(worker_type)
                found = self._batchers[(worker_type, model)] = Batcher(
                    self._client_locked(model),
                    schema,
                    self.settings.models[model],
                    policy.batch_max_size,
                    policy.batch_max_wait_ms / 1000,
                    policy.batch_idle_ms / 1000,
                    shared_tenants=self.settings.cache.shared,
                )
            return found

    def client(self, model: str) -> ModelClient:
        """The model client for a price-table key, built once per process."""
        with self._lock:
            return self._client_locked(model)

    def _client_locked(self, model: str) -> ModelClient:
        found = self._clients.get(model)
        if found is None:
            found = self._clients[model] = build_client(model, self.settings)
        return found


def redis_identity(client: redis.Redis) -> str:
    """Which server and database `client` talks to (no credentials), as `host:port/db`."""
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    master = getattr(pool, "service_name", None)  # a Sentinel master's pool
    where = (
        f"sentinel:{master}"
        if master
        else kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
    )
    return f"{where}/{kwargs.get('db', 0)}"


def build_runtime(settings: FleetlineSettings) -> WorkerRuntime:
    # This process's spans too (their tracer is built on first use, like the rest).
    otel.init_tracing(settings.trace)
    client = make_redis(settings)
    return WorkerRuntime(
        settings=settings,
        redis=client,
        store=StateStore(
            client,
            settings.limits.finished_ttl_s,
            keys.closing_once_ttl_s(settings.redis.outage_grace_s),
        ),
    )


class _PerProcess:
    """Holds the runtime of the current process; a forked child builds its own."""

    def __init__(self) -> None:
        self.runtime: WorkerRuntime | None = None
        self.pid = 0
        self.lock = threading.Lock()

    def get(self) -> WorkerRuntime:
        with self.lock:
            if self.runtime is None or self.pid != os.getpid():
                self.runtime = build_runtime(get_settings())
                self.pid = os.getpid()
            return self.runtime


_holder = _PerProcess()


def get_runtime() -> WorkerRuntime:
    """This process's runtime."""
    return _holder.get()
