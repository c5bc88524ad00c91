"""The HTTP API fuzzed from its own /openapi.json (schemathesis) against a live server and
fleet: whatever a caller sends, no answer is a 5xx."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import FleetFactory
from tests.integration.served_api import serving

pytestmark = pytest.mark.integration

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


def test_no_request_the_schema_allows_gets_a_server_error(
    start_fleet: FleetFactory, tmp_path: Path
) -> None:
    fleet = start_fleet(with_beat=False)
    # A rate the fuzzer does not run into: past it, every answer would be a 429.
    with serving(fleet, FLEETLINE_API_RATE_PER_S="10000", FLEETLINE_API_BURST="10000") as served:
        auth = served.key("fuzz")["Authorization"]
        run = subprocess.run(
            [
                SCHEMATHESIS,
                "run",
                f"{served.base_url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--header",
                f"Authorization: {auth}",
                # Ten a route keeps the suite's run short; `make chaos` fuzzes the job specs
                # much further (its fuzz_specs scenario).
                "--max-examples",
                "10",
                "--seed",
                "20261203",
                "--workers",
                "1",
                "--request-timeout",
                "10",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,
            check=False,
        )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "POST /v1/jobs" in run.stdout, "the submit route was fuzzed"
