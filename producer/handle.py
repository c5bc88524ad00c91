"""JobHandle: a submitted job, as the Python API hands it back."""

from __future__ import annotations

import time
from dataclasses import dataclass

from fleetline.producer.cancel import cancel_job
from fleetline.shared.errors import WaitTimeout
from fleetline.shared.schemas import JobResult, JobStatus
from fleetline.shared.state import StateStore

# How often wait() reads the job record: a status and a count, cheap at any size.
POLL_S = 0.1
# Without a timeout, wait() gives the watchdog this long past the job's deadline.
WAIT_GRACE_S = 30.0


@dataclass(frozen=True)
class JobHandle:
    """A job that was submitted: its id, and whether this submit created it.

    `created` is False when an earlier submit with the same idempotency key made the job.
    """

    job_id: str
    created: bool
    steps: int
    store: StateStore

    def status(self) -> JobStatus:
        """The job's status now (one small read)."""
        return self.store.progress(self.job_id)[0]

    def result(self) -> JobResult:
        """The job's record now: status, cost, every step's outcome, the result if final."""
        return self.store.get(self.job_id)

    def cancel(self, actor: str = "python") -> bool:
        """Cancel the job (its steps not yet started never run); False if it had ended."""
        return cancel_job(self.store, self.job_id, actor)

    def wait(self, timeout: float | None = None) -> JobResult:
        """Block until the job is terminal and return its result.

        Args:
            timeout: seconds to wait; None: until its deadline plus a grace.

        Raises:
            WaitTimeout: the job was still running when the timeout passed.
        """
        if timeout is None:
            timeout = max(0.0, self.result().deadline_at - time.time()) + WAIT_GRACE_S
        give_up = time.monotonic() + timeout
        while not self.status().terminal:
            if time.monotonic() >= give_up:
                raise WaitTimeout(f"job {self.job_id} still running after {timeout:g}s")
            time.sleep(POLL_S)
        return self.result()
