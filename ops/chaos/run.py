"""One chaos run: its Redis, its sizes (full or quick), and the fleets its scenarios start.

A scenario asks the run for fleets (each on a database of its own) and returns its
Account; the run stops the scenario's fleets afterwards, whatever happened.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from ops.chaos.harness import DATABASES, ChaosFleet, ChaosRedis


@dataclass
class Run:
    quick: bool
    workdir: Path
    server: ChaosRedis
    fleets: list[ChaosFleet] = field(default_factory=list)
    _dbs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _clients: list[redis.Redis] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Jobs submitted per second by a scenario's stream."""
        return 2.0 if self.quick else 4.0

    @property
    def fault_s(self) -> float:
        """How long a scenario's faults last."""
        return 20.0 if self.quick else 60.0

    def scaled(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def new_db(self) -> int:
        db = next(self._dbs)
        if db >= DATABASES:
            raise RuntimeError("out of Redis databases")
        return db

    def fleet(self, name: str, **kwargs: Any) -> ChaosFleet:
        """A fleet on a database of its own."""
        return self.fleet_on(self.new_db(), name, **kwargs)

    def fleet_on(self, db: int, name: str, **kwargs: Any) -> ChaosFleet:
        """A fleet on `db`, beside another fleet's."""
        started = ChaosFleet.start(self.server, self.workdir, name, db, **kwargs)
        self.fleets.append(started)
        return started

    def client(self, fleet: ChaosFleet) -> redis.Redis:
        made = self.server.client(fleet.db)
        self._clients.append(made)
        return made

    def end_scenario(self) -> None:
        for fleet in self.fleets:
            try:
                fleet.stop()
            except Exception:  # a fleet that would not stop must not stop the run
                for process in fleet.supervisor.processes.values():
                    process.kill()
        self.fleets.clear()
        for client in self._clients:
            client.close()
        self._clients.clear()
