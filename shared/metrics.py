"""Prometheus metrics: the families Fleetline's processes record, one registry per host.

Every process of a host or container records into one multiprocess registry: a folder
(PROMETHEUS_MULTIPROC_DIR) of files, one per process, which the host's one endpoint reads
at each scrape (shared/metrics_node.py). A process records only when metrics are on and
that folder is set (`init_metrics`); otherwise every function here returns at once.
Nothing is made at import: the families are built on first use, and a forked pool child
writes files of its own (prometheus-client notices the new pid).

Steps, model calls and their tokens and cost are counted from the spans a process ends
(shared/metrics_spans.py); the rest where the thing happens: messages as Celery publishes
them, state mutations and job ends in the state store, savings in the cache guard. The
fleet-wide gauges (queues, breakers, spend) are not recorded here: `fleetline exporter`
reads them from Redis at each scrape.

Every label value is bounded: agent and tool names, models of the price table, queues, job
kinds, and the statuses and error categories below. No tenant, job or step is a label.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from fleetline.shared.schemas import JobStatus, OutcomeStatus

if TYPE_CHECKING:
    from fleetline.shared.metrics_settings import MetricsSettings

# The error categories a step outcome can carry (README: "Metrics"): the exceptions' own
# (shared/errors.py), then the guards' and the gate's. Anything else is counted as `other`;
# an ok outcome has none, and its `category` label is empty.
ERROR_CATEGORIES = frozenset(
    {
        "internal", "permanent", "model_error", "rate_limited", "server_error", "timeout",
        "connection_error", "auth", "bad_request", "tool_error",
        "deadline", "cancelled", "poison", "kill_switch", "circuit_open", "budget",
        "rate_limit", "fair_share", "invalid_output", "invalid_input", "quorum",
        "other",
    }
)  # fmt: skip
OUTCOME_STATUSES = frozenset(s.value for s in OutcomeStatus)
# A step attempt's duration: its outcome's status, or how it ended without one.
ATTEMPT_ENDS = frozenset({"retry", "requeued"})
JOB_STATUSES = frozenset(s.value for s in JobStatus if s.terminal)

# Seconds: a step is one model call or a few (a tool: milliseconds); a job is its deadline
# at most, from seconds (interactive) to an hour (batches).
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
JOB_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class Families:
    """The metric families a process records into (`registry`: None in the fleet, where
    the folder is the registry; a CollectorRegistry of their own in unit tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.step_duration = Histogram(
            "fleetline_step_duration_seconds",
            "Step attempts by agent or tool and how they ended (outcome status, retry, requeued).",
            ["agent", "status"], buckets=STEP_BUCKETS, registry=registry,
        )  # fmt: skip
        self.step_outcomes = Counter(
            "fleetline_step_outcomes",
            "Step outcomes by agent or tool, status and error category (empty: none).",
            ["agent", "status", "category"], registry=registry,
        )  # fmt: skip
        self.steps_running = Gauge(
            "fleetline_steps_running",
            "Step attempts running now, by agent or tool.",
            ["agent"], multiprocess_mode="livesum", registry=registry,
        )  # fmt: skip
        self.job_duration = Histogram(
            "fleetline_job_duration_seconds",
            "Jobs from submit to their end, by kind and final status.",
            ["kind", "status"], buckets=JOB_BUCKETS, registry=registry,
        )  # fmt: skip
        self.deadline_misses = Counter(
            "fleetline_deadline_misses",
            "Jobs the deadline watchdog ended with what they had, by kind.",
            ["kind"], registry=registry,
        )  # fmt: skip
        self.tokens = Counter(
            "fleetline_tokens",
            "Tokens of model calls, by agent, model and direction (input, output).",
            ["agent", "model", "direction"], registry=registry,
        )  # fmt: skip
        self.cost = Counter(
            "fleetline_cost_usd",
            "What model calls cost, in USD, by agent and model.",
            ["agent", "model"], registry=registry,
        )  # fmt: skip
        self.state_mutations = Counter(
            "fleetline_state_mutations",
            "Writes of job state on behalf of an agent or tool (its steps' outcomes).",
            ["agent"], registry=registry,
        )  # fmt: skip
        self.messages = Counter(
            "fleetline_messages",
            "Task messages published, by queue.",
            ["queue"], registry=registry,
        )  # fmt: skip
        self.cache_saved = Counter(
            "fleetline_cache_saved_usd",
            "What cache hits saved, in USD (the cost of the call that made the entry).",
            registry=registry,
        )  # fmt: skip


@dataclass
class _State:
    """Whether this process records, and into what (built on first use)."""

    on: bool = False
    families: Families | None = None


_lock = threading.Lock()
_state = _State()


def init_metrics(settings: MetricsSettings) -> bool:
    """Record this process's metrics into PROMETHEUS_MULTIPROC_DIR, when metrics are on and
    it is set; True if this process records. Once is enough: a forked child inherits it."""
    if not settings.enabled or not settings.multiproc_dir:
        return False
    with _lock:
        if _state.on:
            return True
        # prometheus-client reads its folder from the environment, where children find it.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = settings.multiproc_dir
        _multiprocess_values()
        from celery.signals import before_task_publish

        from fleetline.shared import otel
        from fleetline.shared.metrics_spans import install

        before_task_publish.connect(_published, weak=False, dispatch_uid="fleetline-metrics")
        otel.count_spans(install)
        _state.on = True
    return True


def recording() -> bool:
    """Whether this process records metrics."""
    return _state.on


def process_ended() -> None:
    """This process is ending: its live gauges leave the registry (counts stay)."""
    if _state.on:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def _multiprocess_values() -> None:
    # prometheus-client picks file-backed values at its import, from the environment: a
    # process that imported it before the folder was set (a CLI command) switches now.
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def families() -> Families | None:
    """This process's families (None: it records nothing)."""
    if not _state.on:
        return None
    found = _state.families
    if found is None:
        with _lock:
            found = _state.families = _state.families or Families()
    return found


@contextmanager
def recording_into(found: Families) -> Iterator[Families]:
    """Record into `found` for a while, whatever init_metrics said (unit tests)."""
    before = _state.on, _state.families
    _state.on, _state.families = True, found
    try:
        yield found
    finally:
        _state.on, _state.families = before


# --- What the hooks call ------------------------------------------------------------------


def step_started(agent: str, change: int = 1) -> None:
    """A step attempt of `agent` began (change=-1: it ended)."""
    f = families()
    if f is not None:
        f.steps_running.labels(agent).inc(change)


def step_ended(agent: str, status: str, category: str | None, seconds: float) -> None:
    """A step attempt ended: with an outcome (its status and error category) or without
    (`retry`, `requeued`: no outcome is counted)."""
    f = families()
    if f is None or not (status in OUTCOME_STATUSES or status in ATTEMPT_ENDS):
        return
    f.step_duration.labels(agent, status).observe(max(0.0, seconds))
    if status in OUTCOME_STATUSES:
        f.step_outcomes.labels(agent, status, error_category(status, category)).inc()


def error_category(status: str, category: str | None) -> str:
    """The `category` label of an outcome: empty for ok, `other` for an unlisted one."""
    if status == OutcomeStatus.OK.value or not category:
        return ""
    return category if category in ERROR_CATEGORIES else "other"


def call_billed(agent: str, model: str, tokens_in: int, tokens_out: int, cost_usd: float) -> None:
    """A model call's usage and what it cost."""
    f = families()
    if f is None:
        return
    f.tokens.labels(agent, model, "input").inc(max(0, tokens_in))
    f.tokens.labels(agent, model, "output").inc(max(0, tokens_out))
    f.cost.labels(agent, model).inc(max(0.0, cost_usd))


def job_ended(kind: str, status: str, seconds: float, reason: str = "") -> None:
    """A job was made final (by whoever finalised it; `reason`: the finaliser's)."""
    f = families()
    if f is None or status not in JOB_STATUSES:
        return
    f.job_duration.labels(kind, status).observe(max(0.0, seconds))
    if reason == "deadline":
        f.deadline_misses.labels(kind).inc()


def state_mutation(agent: str) -> None:
    """A write of job state on behalf of `agent`."""
    f = families()
    if f is not None:
        f.state_mutations.labels(agent).inc()


def cache_saved(usd: float) -> None:
    """A cache hit saved `usd`."""
    f = families()
    if f is not None and usd > 0:
        f.cache_saved.inc(usd)


def _published(sender: Any = None, routing_key: str | None = None, **_: Any) -> None:
    # Celery's before_task_publish: each queue has its own exchange and routing key.
    f = families()
    if f is not None:
        f.messages.labels(routing_key or "").inc()
