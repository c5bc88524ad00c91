"""The HTTP API against a live `fleetline serve` and a fleet of real workers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from fleetline import ApiError, AsyncClient, Client, JobNotFound, JobResult, JobStatus, SpecError
from fleetline.producer.api_keys import ApiKeys
from fleetline.producer.http_api import make_api
from fleetline.producer.submit import Producer
from fleetline.shared.settings import load_settings
from tests.integration.conftest import FleetFactory
from tests.integration.served_api import Served, serving
from tests.integration.test_cost_control import brief

pytestmark = pytest.mark.integration


@pytest.fixture
def served(start_fleet: FleetFactory) -> Iterator[Served]:
    # Calls of 300 ms: a job runs long enough to be cancelled while it runs.
    fleet = start_fleet(
        with_beat=False,
        FLEETLINE_LIMITS_MAX_INPUT_BYTES="20000",
        FLEETLINE_SIM_LATENCY_MS="300",
    )
    with serving(fleet) as served:
        yield served


def _spec(**extra: object) -> dict[str, object]:
    spec = brief(2)
    spec.pop("tenant", None)
    return {**spec, **extra}


def test_a_job_submitted_over_http_runs_to_its_end_for_its_tenant_only(served: Served) -> None:
    acme, other = served.key("acme"), served.key("globex")
    assert served.http.post("/v1/jobs", json=_spec()).status_code == 401
    bad = {"Authorization": "Bearer fl_nope_nope"}
    assert served.http.post("/v1/jobs", json=_spec(), headers=bad).status_code == 401

    made = served.http.post("/v1/jobs", json=_spec(), headers=acme)
    assert made.status_code == 202, made.text
    job_id = made.json()["job_id"]
    assert made.json()["status"] == "running"
    result = served.finished(job_id, acme)
    assert result["status"] == "succeeded" and result["tenant"] == "acme"
    assert result["cost_usd"] > 0
    assert served.http.get(f"/v1/jobs/{job_id}", headers=acme).json()["status"] == "succeeded"
    trace = served.http.get(f"/v1/jobs/{job_id}/trace", headers=acme)
    assert trace.status_code == 200, trace.text
    spans = trace.json()["spans"]
    assert [s["name"] for s in spans if s["parent_id"] is None] == ["submit research_brief"]
    charged = sum(s["attributes"].get("fleetline.cost_usd", 0) for s in spans)
    assert charged == pytest.approx(result["cost_usd"], abs=1e-9), "the trace says where it went"
    # Another tenant's job does not exist for this key.
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/result", f"/v1/jobs/{job_id}/trace"):
        assert served.http.get(path, headers=other).status_code == 404
    assert served.http.get("/v1/jobs/nope", headers=acme).status_code == 404
    assert served.http.get("/v1/readyz").json() == {"status": "ready"}
    assert "/v1/jobs" in served.http.get("/openapi.json").json()["paths"]
    # The sample of README's walk-through is a spec the API takes.
    sample = (Path(__file__).parents[2] / "ops/samples/api_research_brief.json").read_bytes()
    assert served.http.post("/v1/jobs", content=sample, headers=acme).status_code == 202


def test_refusals_name_the_field_and_enqueue_nothing(served: Served) -> None:
    acme = served.key("acme")
    named = served.http.post("/v1/jobs", json=_spec(tenant="globex"), headers=acme)
    assert named.status_code == 422
    assert named.json()["errors"][0]["field"] == "tenant"
    broken = served.http.post("/v1/jobs", json=_spec(budget_usd=-1), headers=acme)
    assert broken.status_code == 422
    assert [e["field"] for e in broken.json()["errors"]] == ["budget_usd"]
    garbage = served.http.post("/v1/jobs", content=b"{not json", headers=acme)
    assert garbage.status_code == 422 and garbage.json()["errors"][0]["field"]
    big = _spec()
    big["input"] = {"documents": [{"id": "d", "text": "x" * 30_000}], "question": "q"}
    assert served.http.post("/v1/jobs", json=big, headers=acme).status_code == 413

    once = {**acme, "Idempotency-Key": "order-17"}
    first = served.http.post("/v1/jobs", json=_spec(), headers=once)
    again = served.http.post("/v1/jobs", json=_spec(), headers=once)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["job_id"] == first.json()["job_id"]
    other_spec = served.http.post("/v1/jobs", json=_spec(budget_usd=2), headers=once)
    assert other_spec.status_code == 409
    assert other_spec.json()["errors"][0]["field"] == "idempotency_key"
    clash = served.http.post("/v1/jobs", json=_spec(idempotency_key="order-18"), headers=once)
    assert clash.status_code == 422

    tripped = served.cli("killswitch", "trip", "--scope", "tenant:acme", "--window", "hour")
    assert tripped.returncode == 0, tripped.stderr
    refused = served.http.post("/v1/jobs", json=_spec(), headers=acme)
    assert refused.status_code == 429 and refused.json()["error"] == "kill_switch"
    assert 0 < int(refused.headers["Retry-After"]) <= 3600


def test_a_revoked_key_is_refused_at_once(served: Served) -> None:
    made = served.cli("keys", "create", "--tenant", "acme", "--name", "ci", "--json")
    key = json.loads(made.stdout)
    auth = {"Authorization": f"Bearer {key['key']}"}
    assert served.http.get("/v1/jobs/nope", headers=auth).status_code == 404
    listed = json.loads(served.cli("keys", "list", "--json").stdout)
    assert [(k["key_id"], k["tenant"], k["name"]) for k in listed] == [
        (key["key_id"], "acme", "ci")
    ]
    assert key["key"] not in served.cli("keys", "list", "--json").stdout
    assert served.cli("keys", "revoke", key["key_id"]).returncode == 0
    assert served.http.get("/v1/jobs/nope", headers=auth).status_code == 401
    assert served.cli("keys", "revoke", key["key_id"]).returncode == 2


def test_events_follow_a_job_step_by_step_to_its_final_status(served: Served) -> None:
    acme = served.key("acme")
    job_id = served.http.post("/v1/jobs", json=_spec(), headers=acme).json()["job_id"]
    events: list[tuple[str, dict[str, Any]]] = []
    with served.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=acme) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    progress = [data for name, data in events if name == "progress"]
    assert [name for name, _ in events][-1] == "final"
    assert events[-1][1]["status"] == "succeeded" and events[-1][1]["cost_usd"] > 0
    assert [p["done"] for p in progress] == list(range(1, len(progress) + 1))
    assert progress[-1]["done"] == progress[-1]["total"]
    assert {p["status"] for p in progress} == {"ok"}
    other = served.key("globex")
    assert served.http.get(f"/v1/jobs/{job_id}/events", headers=other).status_code == 404


def test_the_python_clients_submit_wait_and_follow_events(served: Served) -> None:
    made = served.cli("keys", "create", "--tenant", "acme", "--json")
    key = json.loads(made.stdout)["key"]
    url = str(served.http.base_url)
    with Client(url, key) as client:
        submitted = client.submit(_spec(), idempotency_key="client-1")
        assert submitted.created and submitted.status == "running"
        assert client.submit(_spec(), idempotency_key="client-1").created is False
        events = list(client.events(submitted.job_id))
        assert events[-1].name == "final" and events[-1].data["status"] == "succeeded"
        result = client.wait(submitted.job_id)
        assert result.status is JobStatus.SUCCEEDED and result.tenant == "acme"
        with pytest.raises(SpecError) as refused:
            client.submit(_spec(budget_usd=-1))
        assert refused.value.errors[0][0] == "budget_usd"
        with pytest.raises(JobNotFound):
            client.get("nope")

    async def run_async() -> JobResult:
        async with AsyncClient(url, key) as client:
            job_id = (await client.submit(_spec())).job_id
            names = [event.name async for event in client.events(job_id)]
            assert names[-1] == "final" and names.count("progress") >= 1
            return await client.wait(job_id)

    assert asyncio.run(run_async()).status is JobStatus.SUCCEEDED
    with Client(url, "fl_wrong_key") as stranger, pytest.raises(ApiError) as denied:
        stranger.submit(_spec())
    assert denied.value.status == 401


def test_delete_cancels_the_callers_job_once(served: Served) -> None:
    acme, other = served.key("acme"), served.key("globex")
    slow = _spec(deadline_s=60)
    job_id = served.http.post("/v1/jobs", json=slow, headers=acme).json()["job_id"]
    assert served.http.delete(f"/v1/jobs/{job_id}", headers=other).status_code == 404
    gone = served.http.delete(f"/v1/jobs/{job_id}", headers=acme)
    assert gone.status_code == 200 and gone.json()["status"] == "cancelled"
    again = served.http.delete(f"/v1/jobs/{job_id}", headers=acme)
    assert again.status_code == 409 and again.json()["status"] == "cancelled"
    assert served.http.get(f"/v1/jobs/{job_id}", headers=acme).json()["status"] == "cancelled"
    assert any(e.actor.startswith("api:") for e in served.fleet.store.audit(job_id))
    with Client(str(served.http.base_url), acme["Authorization"].split()[1]) as client:
        assert client.cancel(job_id) is False


def test_each_key_is_held_to_its_request_rate(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETLINE_API_RATE_PER_S", "1")
    monkeypatch.setenv("FLEETLINE_API_BURST", "3")
    settings = load_settings()
    producer = Producer.from_settings(settings)
    key, _ = ApiKeys(producer.store.client).create("acme")
    other, _ = ApiKeys(producer.store.client).create("acme")
    with TestClient(make_api(settings, producer)) as http:
        auth = {"Authorization": f"Bearer {key}"}
        answers = [http.get("/v1/jobs/nope", headers=auth) for _ in range(4)]
        assert [a.status_code for a in answers] == [404, 404, 404, 429]
        assert answers[-1].json() == {"error": "rate_limited"}
        assert answers[-1].headers["Retry-After"] == "1"
        # Another key has a bucket of its own.
        assert (
            http.get("/v1/jobs/nope", headers={"Authorization": f"Bearer {other}"}).status_code
            == 404
        )
        time.sleep(1.1)
        assert http.get("/v1/jobs/nope", headers=auth).status_code == 404
        assert http.get("/v1/jobs/nope").json() == {"error": "unauthorized"}
    producer.app.close()
