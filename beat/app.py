"""The beat process: `celery -A beat.app beat -S redbeat.RedBeatScheduler`.

RedBeat keeps the schedule in Redis behind a lock, so a second beat started by mistake
waits instead of scheduling everything twice.
"""

from __future__ import annotations

from fleetline.beat.schedule import build_schedule
from fleetline.shared.celery_app import make_celery, redis_target
from fleetline.shared.logs import quiet_periodic_tasks
from fleetline.shared.names import TASK_KILLSWITCH_CHECK, TASK_REAP_DEADLINES
from fleetline.shared.settings import get_settings

settings = get_settings()
quiet_periodic_tasks([TASK_REAP_DEADLINES, TASK_KILLSWITCH_CHECK])
app = make_celery(settings, name="fleetline-beat", send_only=True)
target = redis_target(settings)
if target.sentinel:
    # RedBeat finds a Sentinel group's master itself, from these options.
    app.conf.update(
        redbeat_redis_url="redis-sentinel://",
        redbeat_redis_options={
            "sentinels": target.sentinels(),
            "service_name": target.sentinel_master,
            "sentinel_kwargs": target.sentinel_kwargs(),
            "socket_timeout": settings.redis.socket_timeout_s,
            **target.master_options(),
        },
    )
else:
    app.conf.update(redbeat_redis_url=target.url)
app.conf.update(
    beat_schedule=build_schedule(settings),
    beat_scheduler="redbeat.RedBeatScheduler",
    redbeat_key_prefix="fl:redbeat:",
    # Beat wakes at least this often; RedBeat's lock outlives five of these wake-ups.
    beat_max_loop_interval=5,
    redbeat_lock_timeout=30,
)
