"""Names both sides of the wire share: how steps, queues and housekeeping tasks are named.

A worker type is an agent or a tool of the loaded fleet: its Celery queue and its task
are named exactly after it. The producer enqueues by these names and never imports
worker modules.
"""

from __future__ import annotations

import re

# Agent, tool and tier names: short, lower case, and never containing a dot, so that no
# worker type can collide with the fleet's own `fleetline.*` queue and task names.
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,47}$"
NAME_RE = re.compile(NAME_PATTERN)

# The chord body of a fan-out: sent to the queue of the plan's `then` step, whose worker
# runs that step on the usable outcomes and finalises the job.
TASK_FAN_IN = "fleetline.fan_in"
# A pipeline's stage and a debate's turns and judge: each runs on the queue of its agent or
# tool (the message says which), closes its step and sends what comes next.
TASK_PIPELINE_STAGE = "fleetline.pipeline_stage"
TASK_DEBATE_TURN = "fleetline.debate_turn"
TASK_DEBATE_JUDGE = "fleetline.debate_judge"
# A supervised job's drafts (on their agent's queue) and its approved actions (on their
# tool's): a draft's close reviews its actions and sends the approved ones.
TASK_SUPERVISED_DRAFT = "fleetline.supervised_draft"
TASK_SUPERVISED_ACTION = "fleetline.supervised_action"
TASK_REAP_DEADLINES = "fleetline.reap_deadlines"
TASK_KILLSWITCH_CHECK = "fleetline.killswitch_check"
TASK_SCHEDULED_RUN = "fleetline.scheduled_run"

# Every worker also consumes this queue: the deadline watchdog, kill-switch enforcement
# and scheduled runs. A kill switch never pauses it, so every job still ends.
HOUSEKEEPING_QUEUE = "fleetline.housekeeping"

HOUSEKEEPING_TASKS = (TASK_REAP_DEADLINES, TASK_KILLSWITCH_CHECK, TASK_SCHEDULED_RUN)


def check_name(name: str, what: str) -> str:
    """`name` if it is a valid agent, tool or tier name; ValueError naming `what` if not."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(
            f"{what} name {name!r} must match {NAME_PATTERN} "
            "(a lower-case letter, then up to 47 lower-case letters, digits or _)"
        )
    return name
