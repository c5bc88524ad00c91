"""`Fleet`: declare a fleet's agents, tools and job kinds, and submit jobs to it."""

from __future__ import annotations

import threading
from typing import Any

from fleetline.producer.handle import JobHandle
from fleetline.producer.submit import Producer
from fleetline.shared.fleet import FleetDefinition
from fleetline.shared.schemas import JobSpec
from fleetline.shared.settings import read_settings


class Fleet(FleetDefinition):
    """A fleet: its agents, tools and job kinds (see `FleetDefinition`), and `submit()`.

    Declaring opens no connection; the first `submit()` reads the settings from the
    environment (FLEETLINE_REDIS_URL, ...) and connects.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._producer: Producer | None = None
        self._lock = threading.Lock()

    def submit(self, spec: JobSpec | dict[str, Any]) -> JobHandle:
        """Validate, admit and enqueue a job of one of this fleet's kinds.

        The same idempotency key (per tenant) returns the first job's handle, with
        `created` False.

        Raises:
            SpecError: the spec or its input is invalid (every field, with the reason);
                nothing was written.
            KillSwitchTripped: a spend kill switch refuses the job.
            StoreUnavailable: Redis did not answer within the submit timeout.
        """
        producer = self.producer()
        receipt = producer.submit(spec)
        return JobHandle(receipt.job_id, receipt.created, receipt.subtasks, producer.store)

    def producer(self) -> Producer:
        """This process's producer for the fleet, built on first use."""
        with self._lock:
            if self._producer is None:
                self._producer = Producer.from_settings(read_settings().bind(self))
            return self._producer
