"""The example's `notify` kind on a fleet of its own for the supervisor tests: the same
drafting agent, plan and delivery functions, with a webhook tool that SIGKILLs its own
worker once right after a POST was delivered (before it is recorded done), when the test
leaves the kill file (FLEETLINE_TEST_KILL_FILE)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from fleetline import Fleet, Plan
from fleetline.examples.notify import NotifyInput, declare_drafter, notify_plan
from fleetline.examples.notify_delivery import post_webhook, send_email

fleet = Fleet("notifytest")
drafter = declare_drafter(fleet)


def _webhook(args: dict[str, Any]) -> dict[str, Any]:
    result = post_webhook(args)
    marker = Path(os.environ.get("FLEETLINE_TEST_KILL_FILE", "/nonexistent"))
    if marker.exists():
        # Delivered, not yet recorded done: the worst moment to die.
        marker.unlink()
        os.kill(os.getpid(), signal.SIGKILL)
    return result


webhook = fleet.tool("webhook", max_retries=3)(_webhook)
email = fleet.tool("email", max_retries=3)(send_email)


@fleet.job("notify", input=NotifyInput)
def notify(inp: NotifyInput) -> Plan:
    return notify_plan(inp, drafter, [webhook, email])
