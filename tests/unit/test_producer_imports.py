"""The producer loads an app only for its job kinds: no model SDK, no worker code."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
from fleetline.producer.submit import parse_spec
from fleetline.shared.settings import load_settings
import fleetline.producer.cli
settings = load_settings()
parse_spec(json.load(open("ops/samples/research_brief.json")), settings)
sdks = ("openai", "anthropic", "fleetline.workers")
clients = {"fleetline.shared.models." + m for m in ("sim", "openai_client", "anthropic_client")}
print(json.dumps(sorted(m for m in sys.modules if m.startswith(sdks) or m in clients)))
"""


def test_planning_a_job_imports_no_model_sdk_and_no_worker_module() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []
