"""The beat process: `celery -A beat.app beat -S redbeat.RedBeatScheduler`.

RedBeat keeps the schedule in Redis behind a lock, so a second beat started by mistake
waits instead of scheduling everything twice.
"""

from __future__ import annotations

from fleetline.beat.schedule import build_schedule
from fleetline.shared.celery_app import make_celery, redis_url
from fleetline.shared.logs import quiet_periodic_tasks
from fleetline.shared.names import TASK_KILLSWITCH_CHECK, TASK_REAP_DEADLINES
from fleetline.shared.settings import get_settings

settings = get_settings()
quiet_periodic_tasks([TASK_REAP_DEADLINES, TASK_KILLSWITCH_CHECK])
app = make_celery(settings, name="fleetline-beat", send_only=True)
app.conf.update(
    beat_schedule=build_schedule(settings),
    beat_scheduler="redbeat.RedBeatScheduler",
    redbeat_redis_url=redis_url(settings),
    redbeat_key_prefix="fl:redbeat:",
    # Beat wakes at least this often; RedBeat's lock outlives five of these wake-ups.
    beat_max_loop_interval=5,
    redbeat_lock_timeout=30,
)
