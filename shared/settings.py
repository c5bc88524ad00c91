"""One settings object, in groups, each read from its own `FLEETLINE_…` environment prefix.

`load_settings()` is the only place that reads the environment; it fails at start-up with
a message naming the setting when anything is invalid.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    PositiveInt,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from fleetline.shared.api_settings import ApiSettings
from fleetline.shared.breakers.settings import BreakerSettings
from fleetline.shared.errors import ConfigError
from fleetline.shared.fleet.loading import load_fleet
from fleetline.shared.killswitch import KillSwitchSettings
from fleetline.shared.ledger import SpendSettings
from fleetline.shared.metrics_settings import MetricsSettings
from fleetline.shared.policy import WorkerPolicy
from fleetline.shared.rate_limits import RateLimit
from fleetline.shared.scheduled import ScheduleSettings
from fleetline.shared.secret_files import read_secret_files
from fleetline.shared.supervisor_settings import SupervisorSettings

if TYPE_CHECKING:
    from fleetline.shared.fleet import FleetDefinition

Provider = Literal["sim", "openai", "anthropic"]

# The guards of a worker's run (workers/guards/), by the names FLEETLINE_WORKER_GUARDS uses,
# in the order they run.
GUARD_NAMES = (
    "recorded",
    "cancelled",
    "deadline",
    "fair_share",
    "crash",
    "killswitch",
    "breaker",
    "budget",
    "cache",
)


class RedisSettings(BaseSettings):
    """Where the broker, result backend and state store live."""

    model_config = SettingsConfigDict(env_prefix="FLEETLINE_REDIS_", extra="ignore")

    # None means "start a private embedded server" (CLI only); workers always get a URL.
    # `redis://[user:password@]host:port/db`, `rediss://...` (TLS), or a Sentinel group:
    # `sentinel://h1:26379;sentinel://h2:26379` with `sentinel_master`.
    url: str | None = None
    # An ACL user and password, put into the URL when it names none (so the URL may sit
    # in a ConfigMap and the password in a secret file: FLEETLINE_REDIS_PASSWORD_FILE).
    username: str | None = None
    password: SecretStr | None = None
    # A Sentinel URL's master name, and the sentinels' own password when they need one.
    sentinel_master: str | None = None
    sentinel_password: SecretStr | None = None
    socket_timeout_s: float = Field(default=5.0, gt=0)
    connect_timeout_s: float = Field(default=2.0, gt=0)
    # submit() gives up after this long when Redis is down, instead of hanging.
    submit_timeout_s: float = Field(default=5.0, gt=0)
    max_connections: int = Field(default=200, ge=10)
    # A worker that loses Redis mid-subtask waits this long for it to come back before it
    # leaves the message to be redelivered: a restart takes seconds, redelivery minutes.
    outage_grace_s: float = Field(default=30.0, ge=0)
    embedded_dir: str = ".fleetline/redis"


class CelerySettings(BaseSettings):
    """Broker behaviour that decides crash safety; each value says why."""

    model_config = SettingsConfigDict(env_prefix="FLEETLINE_CELERY_", extra="ignore")

    # Longer than any hard time limit plus retry countdown: an unacked message is
    # redelivered once this passes, so a shorter one runs live tasks twice. It is also how
    # long the messages of a whole worker that died wait before another worker gets them.
    visibility_timeout_s: int = Field(default=300, ge=5)
    # kombu scans for abandoned messages every interval x throttle seconds.
    unacked_restore_interval_s: int = Field(default=10, ge=1)
    unacked_restore_throttle: int = Field(default=1, ge=1)
    result_expires_s: int = Field(default=86_400, ge=60)
    # Long I/O-bound tasks: a worker should not hoard messages another could run.
    prefetch_multiplier: int = Field(default=1, ge=1)
    # Flower's task pages need events; they cost 30-45 % throughput, so off by default.
    task_events: bool = False
    # A subtask whose deliveries died mid-run this often is poison: dead-lettered, not rerun.
    poison_after_crashes: int = Field(default=2, ge=1)
    # Dead letters kept at most (oldest dropped first).
    dead_letter_max: int = Field(default=10_000, ge=10)


class ModelSpec(BaseModel):
    """One model: who serves it, what it costs (USD per million tokens), and the
    per-minute limits of the API key serving it."""

    provider: Provider
    # The provider's own model id; defaults to the key it is listed under.
    api_model: str | None = None
    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)
    # Requests and tokens per minute, held across the whole fleet (None: no limit).
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    # Models served by one API key share its limit: give them the same key here.
    rate_limit_key: str | None = None

    def rate_limit(self, model_key: str) -> RateLimit | None:
        """The limit a call of this model (listed as `model_key`) counts against."""
        if self.rpm is None and self.tpm is None:
            return None
        return RateLimit(self.rate_limit_key or model_key, self.rpm, self.tpm)


def _default_models() -> dict[str, ModelSpec]:
    # The sim rows carry real-world-like prices so that cost figures in demos mean something.
    return {
        "sim-small": ModelSpec(provider="sim", input_usd_per_mtok=0.15, output_usd_per_mtok=0.60),
        "sim-large": ModelSpec(provider="sim", input_usd_per_mtok=3.0, output_usd_per_mtok=15.0),
        "sim-long": ModelSpec(provider="sim", input_usd_per_mtok=1.25, output_usd_per_mtok=10.0),
        "gpt-4o-mini": ModelSpec(
            provider="openai", input_usd_per_mtok=0.15, output_usd_per_mtok=0.60
        ),
        "gpt-4o": ModelSpec(provider="openai", input_usd_per_mtok=2.5, output_usd_per_mtok=10.0),
        "claude-haiku": ModelSpec(
            provider="anthropic",
            api_model="claude-3-5-haiku-latest",
            input_usd_per_mtok=0.8,
            output_usd_per_mtok=4.0,
        ),
        "claude-sonnet": ModelSpec(
            provider="anthropic",
            api_model="claude-sonnet-4-5",
            input_usd_per_mtok=3.0,
            output_usd_per_mtok=15.0,
        ),
    }


def _default_tiers() -> dict[str, list[str]]:
    return {
        "cheap": ["sim-small"],
        "reasoning": ["sim-large"],
        "long_context": ["sim-long"],
    }


class LatencyProfile(BaseModel):
    """How a job's end-to-end budget splits between its phases (seconds)."""

    total_s: float = Field(gt=0)
    planning_s: float = Field(ge=0)
    workers_s: float = Field(gt=0)
    synthesis_s: float = Field(ge=0)
    # Whether calls may wait a few milliseconds to share a batched model call: worth it
    # for throughput and cost, not for a person waiting on an answer.
    batching: bool = False

    @model_validator(mode="after")
    def _adds_up(self) -> LatencyProfile:
        if self.planning_s + self.workers_s + self.synthesis_s > self.total_s + 1e-9:
            raise ValueError("planning_s + workers_s + synthesis_s must not exceed total_s")
        return self

    def workers_share(self) -> float:
        """The part of a job's deadline by which its parallel subtasks must be done."""
        return (self.planning_s + self.workers_s) / self.total_s


def _default_latency_profiles() -> dict[str, LatencyProfile]:
    # The interactive rule of thumb: 8 s end to end, 0.5 s planning, 5 s for the parallel
    # workers, 2 s for synthesis (the remaining 0.5 s is slack for queues).
    return {
        "interactive": LatencyProfile(total_s=8, planning_s=0.5, workers_s=5, synthesis_s=2),
        "batch": LatencyProfile(
            total_s=600, planning_s=5, workers_s=480, synthesis_s=100, batching=True
        ),
    }


class ProviderSettings(BaseSettings):
    """Endpoints and keys of the real providers (unused by the offline `sim` provider)."""

    model_config = SettingsConfigDict(env_prefix="FLEETLINE_", extra="ignore")

    openai_base_url: str | None = None
    openai_api_key: SecretStr | None = None
    anthropic_base_url: str | None = None
    anthropic_api_key: SecretStr | None = None


class SimSettings(BaseSettings):
    """The offline `sim` provider: deterministic, with fault injection (see README)."""

    model_config = SettingsConfigDict(env_prefix="FLEETLINE_SIM_", extra="ignore")

    latency_ms: float = Field(default=0.0, ge=0)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    malformed_rate: float = Field(default=0.0, ge=0, le=1)
    seed: int = 0
    stall_types: str = ""
    stall_ms: float = Field(default=60_000.0, ge=0)
    # A file every sim call appends one JSON line to (tests count calls across processes).
    call_log: str = ""
    # A file every answered sim call appends its bill to (one JSON line: model, tokens,
    # call and job ids, tenant), as a provider's invoice; `fleetline spend reconcile`.
    invoice: str = ""
    # While this file exists, every model or tool named on a line of it is down (server
    # errors): an outage that can start and end while the fleet runs.
    outage_file: str = ""
    # A document (or a tool's arguments) containing this text kills the process that
    # handles it (a poison message), in the agents and tools listed in crash_types
    # (comma-separated; empty: all). stall_types lists agents and tools too.
    crash_marker: str = ""
    crash_types: str = ""
    # When the process dies: on the model call (before billing), or after the step's
    # calls were billed and before they are settled.
    crash_at: Literal["call", "settlement"] = "call"

    @property
    def stalled(self) -> frozenset[str]:
        return _names(self.stall_types)

    def down(self, name: str) -> bool:
        """Whether the outage file names this model or tool; it is read on every call, so
        an outage starts and ends while the fleet runs."""
        if not self.outage_file:
            return False
        try:
            with open(self.outage_file) as f:
                return name in {line.strip() for line in f}
        except FileNotFoundError:
            return False

    def crashes(self, worker_type: str, document: str) -> bool:
        """Whether the sim must kill its process for this call."""
        if not self.crash_marker or self.crash_marker not in document:
            return False
        types = _names(self.crash_types)
        return not types or worker_type in types


def _names(csv: str) -> frozenset[str]:
    return frozenset(t.strip() for t in csv.split(",") if t.strip())


class CacheSettings(BaseSettings):
    """The result cache (per worker type TTLs live with the worker types)."""

    model_config = SettingsConfigDict(env_prefix="FLEETLINE_CACHE_", extra="ignore")

    enabled: bool = True
    # Off: one tenant's prompts never answer another's. On: identical calls of every
    # tenant share entries (only for tenants that may see each other's data).
    shared: bool = False


class LimitsSettings(BaseSettings):
    """Edge limits on what a job may ask for, and how long records live."""

    model_config = SettingsConfigDict(env_prefix="FLEETLINE_LIMITS_", extra="ignore")

    max_deadline_s: float = Field(default=1800.0, gt=0)
    max_input_bytes: int = Field(default=20_000_000, ge=1)
    # The deepest nesting of objects and arrays a spec may have, checked before anything
    # recursive reads it; pydantic cannot serialize past ~256 levels, hence the ceiling.
    max_json_depth: int = Field(default=64, ge=1, le=200)
    # Finished jobs stay readable this long, then their keys expire.
    finished_ttl_s: int = Field(default=7 * 86_400, ge=60)
    # How late past its deadline the watchdog may finalise a job.
    deadline_grace_s: float = Field(default=0.2, ge=0)
    reaper_interval_s: float = Field(default=0.5, gt=0)
    # Fair share: the most steps of one tenant in flight fleet-wide, by tenant ("*": every
    # tenant not listed; empty: no limit), e.g. '{"*": 20, "acme": 50}'.
    tenant_steps_in_flight: dict[str, PositiveInt] = Field(default_factory=dict)

    def tenant_steps(self, tenant: str) -> int | None:
        """The in-flight limit of `tenant`'s steps, or None."""
        table = self.tenant_steps_in_flight
        return table.get(tenant, table.get("*"))


class TraceSettings(BaseSettings):
    """Each job's trace: its spans kept with the job in Redis (`fleetline trace`), and sent
    to an OpenTelemetry backend when an OTLP endpoint is set."""

    model_config = SettingsConfigDict(
        env_prefix="FLEETLINE_TRACE_", extra="ignore", populate_by_name=True
    )

    # redis: every process writes each job's spans beside its record, for as long as the
    # record lives; off: none are kept (an OTLP endpoint still gets them).
    store: Literal["redis", "off"] = "redis"
    # The most spans one job keeps in Redis: a job of thousands of steps keeps its first.
    max_spans: int = Field(default=2_000, ge=10, le=100_000)
    # OpenTelemetry's own variables. Spans go out over OTLP/HTTP only when an endpoint is
    # set; the exporter reads the rest (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, ...) itself.
    otlp_endpoint: str | None = Field(default=None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    # Used as it is (the base endpoint above gets /v1/traces appended).
    otlp_traces_endpoint: str | None = Field(
        default=None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    service_name: str = Field(default="fleetline", validation_alias="OTEL_SERVICE_NAME")

    @property
    def traces_endpoint(self) -> str | None:
        """Where the OTLP exporter posts spans, or None: no exporter."""
        if self.otlp_traces_endpoint:
            return self.otlp_traces_endpoint
        if self.otlp_endpoint:
            return self.otlp_endpoint.rstrip("/") + "/v1/traces"
        return None

    @property
    def enabled(self) -> bool:
        """Whether any span is recorded at all (off and no endpoint: none, at no cost)."""
        return self.store != "off" or self.traces_endpoint is not None


class FleetlineSettings(BaseSettings):
    """All of Fleetline's settings."""

    model_config = SettingsConfigDict(
        env_prefix="FLEETLINE_", env_nested_delimiter="__", extra="ignore"
    )

    # The fleet to run, as `module:attribute` (FLEETLINE_APP); None: the example fleet.
    app: str | None = None
    redis: RedisSettings = Field(default_factory=RedisSettings)
    celery: CelerySettings = Field(default_factory=CelerySettings)
    # Overrides of the fleet's worker policies by agent or tool name, one field each
    # (FLEETLINE_WORKERS__<NAME>__<FIELD>); `bind()` merges them over the code's defaults.
    workers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    models: dict[str, ModelSpec] = Field(default_factory=_default_models)
    tiers: dict[str, list[str]] = Field(default_factory=_default_tiers)
    providers: ProviderSettings = Field(default_factory=ProviderSettings)
    sim: SimSettings = Field(default_factory=SimSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    spend: SpendSettings = Field(default_factory=SpendSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings)
    trace: TraceSettings = Field(default_factory=TraceSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    killswitch: KillSwitchSettings = Field(default_factory=KillSwitchSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    latency_profiles: dict[str, LatencyProfile] = Field(default_factory=_default_latency_profiles)
    # The profile of a job that names none: it decides how its deadline is split.
    default_latency_profile: str = "interactive"
    sentry_dsn: SecretStr | None = None
    # The share of tasks Sentry records as performance traces (with a DSN set).
    sentry_traces_sample_rate: float = Field(default=0.1, ge=0, le=1)
    log_level: str = "INFO"
    # Where workers write each call's usage ahead of its settlement; keep it on a volume
    # that outlives a worker's restart, so a killed worker's calls are still charged.
    spool_dir: str = ".fleetline/spool"
    # A diagnostic knob (FLEETLINE_WORKER_GUARDS), for measuring what each guard costs:
    # the guards every agent and tool run passes, as a comma-separated list of
    # GUARD_NAMES; "all" (the default) runs every one, "none" runs none. Leave it at "all"
    # in production: a guard left out is a protection gone (without "budget" no spend
    # limit holds, without "recorded" a redelivered step calls its model again, without
    # "breaker" a failing provider is called on).
    worker_guards: str = "all"
    # Worker processes per `fleetline worker` (FLEETLINE_WORKER_PROCESSES; --processes
    # overrides it): a threads pool runs its Python on one core, so one per core uses all.
    worker_processes: int = Field(default=1, ge=1, le=64)

    @field_validator("worker_guards")
    @classmethod
    def _known_guards(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        if names in (["all"], ["none"]):
            return names[0]
        if not names:
            raise ValueError('no guard named (use "none" to turn every guard off)')
        if {"all", "none"} & set(names):
            raise ValueError('"all" and "none" stand alone, not in a list of guards')
        unknown = [n for n in names if n not in GUARD_NAMES]
        if unknown:
            raise ValueError(
                f"unknown guard {unknown[0]!r} (known: {', '.join(GUARD_NAMES)}; or all, none)"
            )
        return ",".join(names)

    @property
    def guards_on(self) -> frozenset[str]:
        """The names of the guards FLEETLINE_WORKER_GUARDS leaves on."""
        if self.worker_guards == "all":
            return frozenset(GUARD_NAMES)
        if self.worker_guards == "none":
            return frozenset()
        return frozenset(self.worker_guards.split(","))

    @field_validator("models", mode="before")
    @classmethod
    def _add_models(cls, value: object) -> object:
        # Models named in the environment are added to the built-in price table; fields
        # given for a built-in model (FLEETLINE_MODELS__GPT-4O__TPM) update its row.
        if not isinstance(value, dict):
            return value
        rows: dict[str, Any] = {k: v.model_dump() for k, v in _default_models().items()}
        for key, row in value.items():
            known = rows.get(key)
            rows[key] = {**known, **row} if known is not None and isinstance(row, dict) else row
        return rows

    @field_validator("tiers", mode="before")
    @classmethod
    def _override_tiers(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        return {**_default_tiers(), **value}

    @field_validator("latency_profiles", mode="before")
    @classmethod
    def _add_profiles(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        return {**{k: v.model_dump() for k, v in _default_latency_profiles().items()}, **value}

    @model_validator(mode="after")
    def _consistent(self) -> FleetlineSettings:
        if self.default_latency_profile not in self.latency_profiles:
            raise ValueError(
                f"default_latency_profile: no latency profile {self.default_latency_profile!r}"
            )
        for tier, chain in self.tiers.items():
            if not chain:
                raise ValueError(f"tiers.{tier}: needs at least one model")
            for model in chain:
                if model not in self.models:
                    raise ValueError(f"tiers.{tier}: unknown model {model!r}")
        return self

    # --- the fleet these settings run -------------------------------------------------

    _fleet: FleetDefinition | None = PrivateAttr(default=None)
    _policies: dict[str, WorkerPolicy] = PrivateAttr(default_factory=dict)

    def bind(self, fleet: FleetDefinition) -> FleetlineSettings:
        """These settings for `fleet`: each worker type's policy resolved (the code's
        defaults, then FLEETLINE_WORKERS__<NAME>__<FIELD>) and checked.

        Raises ConfigError naming the environment variable or the agent at fault.
        """
        bound = self.model_copy()
        bound._fleet = fleet
        bound._policies = resolve_policies(self, fleet)
        return bound

    @property
    def fleet(self) -> FleetDefinition:
        """The fleet these settings were bound to."""
        if self._fleet is None:
            raise ConfigError("settings are not bound to a fleet (use get_settings())")
        return self._fleet

    @property
    def policies(self) -> dict[str, WorkerPolicy]:
        """Every agent's and tool's resolved policy, by name."""
        self.fleet  # noqa: B018 - raises when unbound
        return self._policies

    def worker(self, worker_type: str) -> WorkerPolicy:
        """The resolved policy of one agent or tool."""
        # The hot path (a step asks several times): one private read, not two properties.
        policy = self._policies.get(worker_type)
        if policy is not None:
            return policy
        known = ", ".join(sorted(self.policies))  # raises when unbound
        raise ConfigError(f"no agent or tool {worker_type!r} (known: {known})")

    def model_chain(self, worker_type: str) -> list[str]:
        """The models that may serve an agent, in order: its tier, then its fallbacks."""
        policy = self.worker(worker_type)
        chain: list[str] = []
        for tier in [policy.tier, *policy.fallback_tiers]:
            if tier is not None:
                chain += [m for m in self.tiers[tier] if m not in chain]
        return chain


def resolve_policies(
    settings: FleetlineSettings, fleet: FleetDefinition
) -> dict[str, WorkerPolicy]:
    """Each worker type's policy: code defaults, env overrides, checked against settings."""
    unknown = sorted(set(settings.workers) - set(fleet.worker_types))
    if unknown:
        known = ", ".join(sorted(fleet.worker_types))
        raise ConfigError(
            f"FLEETLINE_WORKERS__{unknown[0].upper()}__…: fleet {fleet.name} has no agent or "
            f"tool {unknown[0]!r} (known: {known})"
        )
    vt = settings.celery.visibility_timeout_s
    policies: dict[str, WorkerPolicy] = {}
    for name, declared in fleet.worker_types.items():
        overrides = {k: _env_value(v) for k, v in settings.workers.get(name, {}).items()}
        try:
            policy = WorkerPolicy.model_validate({**declared.policy, **overrides})
        except ValidationError as exc:
            raise ConfigError(f"invalid settings: {_describe_policy(name, exc)}") from None
        for field in ("tier", "fallback_tiers"):
            value = getattr(policy, field)
            for tier in value if isinstance(value, list) else [value]:
                if tier is not None and tier not in settings.tiers:
                    where = (
                        f"FLEETLINE_WORKERS__{name.upper()}__{field.upper()}"
                        if field in overrides
                        else f"agent {name!r} ({field})"
                    )
                    raise ConfigError(
                        f"invalid settings: {where}: unknown tier {tier!r} (known: "
                        f"{', '.join(sorted(settings.tiers))}; add one with FLEETLINE_TIERS)"
                    )
        longest = policy.time_limit_s + policy.retry_backoff_max_s
        if longest >= vt:
            raise ConfigError(
                f"invalid settings: FLEETLINE_WORKERS__{name.upper()}: time_limit_s + "
                f"retry_backoff_max_s ({longest:g}s) must stay below "
                f"FLEETLINE_CELERY_VISIBILITY_TIMEOUT_S ({vt}s), or messages are redelivered "
                "while still running"
            )
        policies[name] = policy
    return policies


def _env_value(value: Any) -> Any:
    # A list in the environment arrives as its JSON text (the field's type is not known
    # while the environment is read).
    if isinstance(value, str) and value.lstrip().startswith(("[", "{")):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _describe_policy(name: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = "__".join(str(p) for p in err["loc"]).upper()
        where = f"FLEETLINE_WORKERS__{name.upper()}" + (f"__{field}" if field else "")
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


_GROUPS: tuple[type[BaseSettings], ...] = (
    RedisSettings,
    SpendSettings,
    CacheSettings,
    BreakerSettings,
    SupervisorSettings,
    KillSwitchSettings,
    ScheduleSettings,
    CelerySettings,
    ProviderSettings,
    SimSettings,
    LimitsSettings,
    TraceSettings,
    MetricsSettings,
)


def _describe(exc: ValidationError) -> str:
    """Name each bad setting by the environment variable that sets it."""
    group = next((g for g in _GROUPS if g.__name__ == exc.title), None)
    prefix = group.model_config.get("env_prefix", "") if group else "FLEETLINE_"
    sep = "_" if group else "__"
    parts = []
    for err in exc.errors():
        loc = sep.join(str(p) for p in err["loc"])
        name = f"{prefix}{loc}".upper() if loc else "settings"
        parts.append(f"{name}: {err['msg']}")
    return "; ".join(parts)


def read_settings() -> FleetlineSettings:
    """Read the settings from the environment (not bound to a fleet yet), or raise
    ConfigError naming the setting."""
    read_secret_files()
    try:
        return FleetlineSettings()
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {_describe(exc)}") from exc


def load_settings(app: str | None = None) -> FleetlineSettings:
    """The settings from the environment, bound to the fleet `app` names (default:
    FLEETLINE_APP, else the example fleet). Raises ConfigError naming what is wrong."""
    settings = read_settings()
    if app:
        settings = settings.model_copy(update={"app": app})
    return settings.bind(load_fleet(settings.app))


@lru_cache(maxsize=1)
def get_settings() -> FleetlineSettings:
    """The process's settings, read once."""
    return load_settings()
