"""A team's own fleet, written outside the repository, run end to end by the CLI.

The temporary directory holds only the app module and the spec, as a team's repository
would; `fleetline up` there starts an embedded Redis and one worker per agent and tool,
and `fleetline submit` in another process finds that Redis and runs the job.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from fleetline import JobStatus, SpecError

pytestmark = pytest.mark.integration

FLEETLINE = str(Path(sys.executable).with_name("fleetline"))

APP = textwrap.dedent(
    '''
    """Acme's review fleet: a sentiment agent, a catalogue lookup tool, a digest agent."""

    import json
    import os
    from typing import Literal

    from pydantic import BaseModel, Field

    from fleetline import Fleet, Plan, fan_out


    class Sentiment(BaseModel):
        label: Literal["positive", "negative", "mixed"]
        score: float = Field(ge=-1, le=1)
        quote: str = Field(min_length=1, max_length=300)


    class Digest(BaseModel):
        summary: str = Field(min_length=1)
        highlights: list[str] = Field(min_length=1, max_length=5)


    class ReviewInput(BaseModel):
        reviews: list[str] = Field(min_length=1)
        skus: list[str] = []


    fleet = Fleet("acme")
    sentiment = fleet.agent(
        "sentiment", tier="cheap", output=Sentiment,
        prompt="Classify the sentiment of the review. {goal}",
    )
    digest = fleet.agent(
        "digest", tier="reasoning", output=Digest,
        prompt="Summarise the reviews' sentiment. {goal}", concurrency=4,
    )


    @fleet.tool("lookup", timeout_s=2.0, max_retries=2)
    def lookup(args: dict) -> dict:
        # A side effect a test can see: which process looked up which SKU.
        with open(os.environ["ACME_LOOKUP_LOG"], "a") as log:
            log.write(json.dumps({"sku": args["sku"], "pid": os.getpid()}) + "\\n")
        return {"sku": args["sku"], "in_stock": args["sku"].endswith("1")}


    @fleet.job("review_digest", input=ReviewInput)
    def review_digest(inp: ReviewInput) -> Plan:
        steps = [sentiment.step(id=f"s-{i}", text=r) for i, r in enumerate(inp.reviews)]
        steps += [lookup.step(id=f"l-{i}", args={"sku": s}) for i, s in enumerate(inp.skus)]
        return fan_out(steps, then=digest.step(id="digest", goal="For the product team."))
    '''
)

SPEC = {
    "kind": "review_digest",
    "input": {
        "reviews": [
            "Battery life is superb and the Acme X2 charges in 40 minutes.",
            "The strap broke after 3 days. Support at Acme never answered.",
            "Great screen, but the app crashes twice a day.",
        ],
        "skus": ["X2-001", "X2-002"],
    },
    "deadline_s": 30,
}


@dataclass
class Up:
    """A `fleetline up` running in a team's directory."""

    process: subprocess.Popen[str]
    workdir: Path
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A `fleetline` command in the same directory (no Redis URL given)."""
        return _cli(self.workdir, self.env, *args)

    def redis(self) -> redis.Redis:
        url = (self.workdir / ".fleetline" / "redis" / "url").read_text().strip()
        return redis.Redis.from_url(url)


def _cli(workdir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """A `fleetline` command run in `workdir`, as a shell there would run it."""
    return subprocess.run(
        [FLEETLINE, *args],
        check=False,
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLINE_")}
    # Nothing of the repository on the path: the app imports the installed package only.
    env.pop("PYTHONPATH", None)
    env["ACME_LOOKUP_LOG"] = str(workdir / "lookups.jsonl")
    env["FLEETLINE_SIM_LATENCY_MS"] = "20"
    return env


@pytest.fixture
def acme_up(tmp_path: Path) -> Iterator[Up]:
    (tmp_path / "acme.py").write_text(APP)
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    env = _env(tmp_path)
    process = subprocess.Popen(
        [FLEETLINE, "up"],
        cwd=tmp_path,
        env={**env, "FLEETLINE_APP": "acme:fleet"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen: list[str] = []
    deadline = time.monotonic() + 90
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if "fleet ready" in line:
            break
    if not any("fleet ready" in line for line in seen):
        process.kill()
        pytest.fail("fleetline up did not become ready:\n" + "".join(seen))
    try:
        yield Up(process, tmp_path, env)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.stdout.close()


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


@pytest.mark.timeout(240)
def test_a_fleet_written_outside_the_repository_runs_end_to_end(acme_up: Up) -> None:
    job = _json(acme_up.run("submit", "--app", "acme:fleet", "spec.json", "--wait", "--json"))

    assert job["status"] == "succeeded", job
    assert job["kind"] == "review_digest" and job["completeness"] == 1.0
    steps = {o["subtask_id"]: o for o in job["subtasks"]}
    assert set(steps) == {"s-0", "s-1", "s-2", "l-0", "l-1", "digest"}
    assert {steps[f"s-{i}"]["worker_type"] for i in range(3)} == {"sentiment"}
    # The sim filled Acme's own schema, and the gate let it through.
    for i in range(3):
        out = steps[f"s-{i}"]["output"]
        assert out["label"] in ("positive", "negative", "mixed")
        assert -1 <= out["score"] <= 1 and out["quote"]
        assert steps[f"s-{i}"]["model"] == "sim-small" and steps[f"s-{i}"]["cost_usd"] > 0
    # The tool ran as plain Python in a worker process, and cost no model money.
    assert steps["l-0"]["output"] == {"sku": "X2-001", "in_stock": True}
    assert steps["l-1"]["output"] == {"sku": "X2-002", "in_stock": False}
    assert steps["l-0"]["model"] is None and steps["l-0"]["cost_usd"] == 0
    lines = (acme_up.workdir / "lookups.jsonl").read_text().splitlines()
    lookups = [json.loads(line) for line in lines]
    assert sorted(entry["sku"] for entry in lookups) == ["X2-001", "X2-002"]
    assert all(entry["pid"] != acme_up.process.pid for entry in lookups)
    # The digest read the outcomes and answered in its own schema.
    assert steps["digest"]["model"] == "sim-large"
    assert job["result"]["answer"]["summary"] and job["result"]["answer"]["highlights"]
    assert set(job["result"]["outputs"]) == {"s-0", "s-1", "s-2", "l-0", "l-1"}
    assert job["cost_usd"] == pytest.approx(sum(o["cost_usd"] for o in job["subtasks"]))

    # Every step went through the queue named after its agent or tool.
    client = acme_up.redis()
    bindings = {k.decode() for k in client.keys("_kombu.binding.*")}
    client.close()
    assert {"_kombu.binding.sentiment", "_kombu.binding.lookup", "_kombu.binding.digest"} <= (
        bindings
    )
    audit = _json(acme_up.run("audit", "--app", "acme:fleet", job["job_id"], "--json"))
    recorded = {e["fields"]["subtask"]: e["actor"] for e in audit if "subtask" in e["fields"]}
    assert recorded["l-0"].startswith("lookup-") and recorded["s-0"].startswith("sentiment-")
    assert recorded["digest"].startswith("digest-")
    assert audit[-1]["action"] == "finalised"


@pytest.mark.timeout(240)
def test_another_service_submits_through_the_fleet_object(
    acme_up: Up, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = (acme_up.workdir / ".fleetline" / "redis" / "url").read_text().strip()
    monkeypatch.setenv("FLEETLINE_REDIS_URL", url)
    monkeypatch.syspath_prepend(str(acme_up.workdir))
    acme = importlib.import_module("acme")
    try:
        spec = {**SPEC, "idempotency_key": "digest-2026-12-02"}
        handle = acme.fleet.submit(spec)
        assert handle.created
        result = handle.wait(timeout=60)
        assert result.status is JobStatus.SUCCEEDED and handle.status() is JobStatus.SUCCEEDED
        assert result.result is not None and result.result["answer"]["highlights"]

        again = acme.fleet.submit(spec)
        assert again.job_id == handle.job_id and not again.created

        with pytest.raises(SpecError) as refused:
            acme.fleet.submit({"kind": "review_digest", "input": {"skus": ["X2-001"]}})
        assert [field for field, _ in refused.value.errors] == ["input.reviews"]
    finally:
        acme.fleet.producer().app.close()
        sys.modules.pop("acme", None)


def test_an_app_that_does_not_import_stops_with_its_name(tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text(json.dumps(SPEC))
    result = _cli(tmp_path, _env(tmp_path), "submit", "--app", "acme_missing:fleet", "spec.json")
    assert result.returncode == 2
    assert "acme_missing:fleet" in result.stderr and "acme_missing" in result.stderr


def test_an_app_with_two_agents_of_one_name_stops_naming_it(tmp_path: Path) -> None:
    (tmp_path / "twice.py").write_text(
        "from pydantic import BaseModel\n"
        "from fleetline import Fleet\n"
        "class Out(BaseModel):\n    text: str\n"
        "fleet = Fleet('twice')\n"
        "fleet.agent('echo', tier='cheap', output=Out, prompt='Echo.')\n"
        "fleet.agent('echo', tier='cheap', output=Out, prompt='Echo again.')\n"
    )
    (tmp_path / "spec.json").write_text(json.dumps({"kind": "any", "input": {}}))
    result = _cli(tmp_path, _env(tmp_path), "submit", "-A", "twice:fleet", "spec.json")
    assert result.returncode == 2
    assert "twice:fleet" in result.stderr and "'echo'" in result.stderr
