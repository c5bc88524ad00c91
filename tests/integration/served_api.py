"""A live `fleetline serve` on a test's fleet: the process, a client for it, its keys."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fleetline.producer.cli_serve import SHUTDOWN_GRACE_S
from fleetline.shared.embedded_redis import free_port
from tests.integration.conftest import RunningFleet

FLEETLINE = str(Path(sys.executable).with_name("fleetline"))


@dataclass
class Served:
    fleet: RunningFleet
    http: httpx.Client

    @property
    def base_url(self) -> str:
        return str(self.http.base_url).rstrip("/")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FLEETLINE, *args],
            env=self.fleet.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def key(self, tenant: str) -> dict[str, str]:
        made = self.cli("keys", "create", "--tenant", tenant, "--json")
        assert made.returncode == 0, made.stderr
        return {"Authorization": f"Bearer {json.loads(made.stdout)['key']}"}

    def finished(self, job_id: str, auth: dict[str, str]) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while True:
            answer = self.http.get(f"/v1/jobs/{job_id}/result", headers=auth)
            if answer.status_code == 200:
                data: dict[str, Any] = answer.json()
                return data
            assert answer.status_code == 202 and time.monotonic() < deadline, answer.text
            time.sleep(0.2)


@contextmanager
def serving(fleet: RunningFleet, **env: str) -> Iterator[Served]:
    """`fleetline serve` on a free port with the fleet's settings (and `env` over them),
    until the block ends."""
    port = free_port()
    server = subprocess.Popen(
        [FLEETLINE, "serve", "--port", str(port)],
        env={**fleet.env, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if http.get("/v1/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        yield Served(fleet, http)
    finally:
        http.close()
        server.terminate()
        try:
            server.wait(timeout=SHUTDOWN_GRACE_S + 10)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
