"""The worker side wired together: `celery -A fleetline.workers.app worker -Q <queues>`.

`fleetline worker --agents a,b` runs this for the named agents and tools of the fleet in
FLEETLINE_APP. Every agent and tool gets a task named after it; the fan-in task runs a
fan-out's then-step; the housekeeping tasks (deadline watchdog, kill-switch enforcement,
scheduled runs) run on the housekeeping queue that every worker also consumes. Reading the
settings here is the start-up check: invalid settings or an app that does not load stop
the worker at once, naming what is wrong.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery import Task
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)
from celery.worker.control import control_command
from redis.exceptions import RedisError

from fleetline.beat.enforcement import (
    RESUME_COMMAND,
    CeleryQueueControl,
    enforce,
    pausable_queues,
    resume_home_queue,
)
from fleetline.beat.watchdog import reap_in_turn
from fleetline.producer.scheduled_runs import run_scheduled
from fleetline.producer.submit import Producer
from fleetline.shared.celery_app import make_celery
from fleetline.shared.logs import quiet_periodic_tasks
from fleetline.shared.metrics import init_metrics, process_ended
from fleetline.shared.metrics_node import metrics_dir
from fleetline.shared.metrics_node import serve as serve_metrics
from fleetline.shared.names import (
    TASK_DEBATE_JUDGE,
    TASK_DEBATE_TURN,
    TASK_FAN_IN,
    TASK_KILLSWITCH_CHECK,
    TASK_PIPELINE_STAGE,
    TASK_REAP_DEADLINES,
    TASK_SCHEDULED_RUN,
    TASK_SUPERVISED_ACTION,
    TASK_SUPERVISED_DRAFT,
)
from fleetline.shared.otel import shutdown_tracing
from fleetline.shared.sentry import init_sentry
from fleetline.shared.settings import get_settings
from fleetline.workers.callbacks import keep_delivering
from fleetline.workers.consumer import DeadLetteringConsumer
from fleetline.workers.fan_in import run_fan_in
from fleetline.workers.review_expiry import expire_reviews
from fleetline.workers.rounds import run_judge, run_turn
from fleetline.workers.runaway import install as watch_time_limits
from fleetline.workers.runtime import get_runtime
from fleetline.workers.stages import run_stage
from fleetline.workers.supervision import run_action, run_draft
from fleetline.workers.task import register_worker_type
from fleetline.workers.usage_spool import start_replayer

log = logging.getLogger(__name__)
settings = get_settings()
fleet = settings.fleet
quiet_periodic_tasks([TASK_REAP_DEADLINES, TASK_KILLSWITCH_CHECK])
app = make_celery(settings, name=f"fleetline-{fleet.name}")
# Undecodable bodies and unknown task names are dead-lettered, not dropped.
app.conf.worker_consumer = DeadLetteringConsumer

for worker in fleet.worker_types.values():
    register_worker_type(app, worker, settings)


# Its time limits and queue come with each message: those of the plan's then-step. The
# worker that completes the join sends it with a claim; a chord of an earlier producer
# sends it with the steps' results instead.
@app.task(name=TASK_FAN_IN, bind=True, ignore_result=True)
def fan_in(
    self: Task,
    results: list[Any] | None = None,
    context: dict[str, Any] | None = None,
    claim: str = "",
) -> dict[str, Any]:
    return run_fan_in(self, results, context or {}, claim)


# A pipeline's stages, a debate's turns and its judge: like the fan-in, each message names
# its queue and carries the time limits of the agent or tool it runs.
@app.task(name=TASK_PIPELINE_STAGE, bind=True, ignore_result=True)
def pipeline_stage(self: Task, context: dict[str, Any]) -> dict[str, Any]:
    return run_stage(self, context)


@app.task(name=TASK_DEBATE_TURN, bind=True, ignore_result=True)
def debate_turn(self: Task, context: dict[str, Any]) -> dict[str, Any]:
    return run_turn(self, context)


@app.task(name=TASK_DEBATE_JUDGE, bind=True, ignore_result=True)
def debate_judge(self: Task, context: dict[str, Any]) -> dict[str, Any]:
    return run_judge(self, context)


# A supervised job's drafts and approved actions, on their agent's and tool's queues.
@app.task(name=TASK_SUPERVISED_DRAFT, bind=True, ignore_result=True)
def supervised_draft(self: Task, context: dict[str, Any]) -> dict[str, Any]:
    return run_draft(self, context)


@app.task(name=TASK_SUPERVISED_ACTION, bind=True, ignore_result=True)
def supervised_action(self: Task, context: dict[str, Any]) -> dict[str, Any]:
    return run_action(self, context)


@app.task(name=TASK_REAP_DEADLINES, ignore_result=True, expires=5)
def reap_deadlines() -> int:
    return len(_reap() or [])


def _reap() -> list[str] | None:
    runtime = get_runtime()
    limits = runtime.settings.limits
    # Reviews time out before their jobs' deadlines: rejected first, the job may end.
    expire_reviews(runtime.store, runtime.actions, time.time())
    return reap_in_turn(
        runtime.redis,
        runtime.store,
        fleet,
        time.time(),
        limits.deadline_grace_s,
        limits.reaper_interval_s,
    )


def _keep_reaping() -> None:
    """The deadline watchdog on this worker's timer, whatever becomes of beat."""
    interval = settings.limits.reaper_interval_s
    while True:
        time.sleep(interval)
        try:
            _reap()
        except RedisError:
            pass  # Redis is away: the next interval tries again
        except Exception:
            log.exception("the deadline watchdog failed; it runs again next interval")


@app.task(name=TASK_KILLSWITCH_CHECK, ignore_result=True)
def killswitch_check() -> dict[str, Any]:
    runtime = get_runtime()
    return enforce(
        runtime.redis,
        runtime.settings.spend,
        CeleryQueueControl(app),
        pausable_queues(runtime.redis, fleet.agents),
        trip_at=runtime.settings.killswitch.trip_at,
    ).as_dict()


# Acked on receipt: a run waits for its jobs longer than the visibility timeout, and a
# redelivered run would only wait again (its jobs are idempotent by slot).
@app.task(name=TASK_SCHEDULED_RUN, ignore_result=True, acks_late=False)
def scheduled_run(name: str) -> dict[str, Any]:
    runtime = get_runtime()
    producer = Producer(runtime.settings, runtime.redis, app)
    return run_scheduled(name, runtime.settings, producer, runtime.store).model_dump(mode="json")


# The queues this worker was started with (-Q): the only ones it ever resumes.
_home_queues: set[str] = set()


@worker_init.connect
def _on_worker_init(sender: Any, **_: Any) -> None:
    # The host's metrics endpoint (`fleetline worker`), before any process here records;
    # pool children inherit the recording.
    metrics = settings.metrics
    if metrics.enabled and metrics.serve:
        folder = metrics_dir(metrics)
        metrics = metrics.model_copy(update={"multiproc_dir": str(folder)})
        serve_metrics(metrics, folder)
    init_metrics(metrics)
    _home_queues.update(sender.app.amqp.queues.consume_from)
    init_sentry(settings)
    # The main process replays too: it outlives the pool children that die.
    _replay_billed_usage()
    threading.Thread(target=_keep_reaping, name="fleetline-watchdog", daemon=True).start()
    # Threads and solo pools get no time limit from Celery: ours (none on prefork, gevent).
    watch_time_limits(sender, settings)
    # Job callbacks go from the main process too: it runs no task, and outlives its pool.
    runtime = get_runtime()
    threading.Thread(
        target=keep_delivering,
        args=(runtime.store, runtime.settings.api),
        name="fleetline-callbacks",
        daemon=True,
    ).start()


@worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    # A prefork child leaves its parent's process group. A SIGTERM sent to the whole
    # group (kill -TERM -<pgid>, supervisord's stopasgroup, dumb-init) would otherwise
    # kill the child mid-step, where the parent's warm shutdown lets it finish: the step
    # would be run again and counted as a crash toward the poison limit. The parent still
    # ends its children itself: a cold shutdown signals the child, a hard time limit its
    # whole group (billiard's way with a child that leads its own group).
    os.setpgrp()
    init_sentry(settings)
    _replay_billed_usage()


@worker_shutdown.connect
@worker_process_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    get_runtime().spool.close()
    # A pool child ends without atexit: what the OTLP exporter holds is sent now.
    shutdown_tracing()
    process_ended()


def _replay_billed_usage() -> None:
    runtime = get_runtime()
    start_replayer(runtime.spool, runtime.ledger)


@control_command(name=RESUME_COMMAND, args=[("queue", str)], signature="<queue>")
def _resume_queue(state: Any, queue: str, **_: Any) -> dict[str, str]:
    return resume_home_queue(state.consumer, queue, _home_queues)
