"""Job callbacks with real workers: signed, retried, audited, and kept off private addresses.

A receiver on 127.0.0.1 (http.server in a thread) answers by path: `/ok` 200, `/flaky`
500 twice then 200, `/redirect` 302 to `/elsewhere`. Tenant acme's allow-list names it
exactly (`127.0.0.1:<port>`) and also holds the pattern `*`, which reaches public
addresses only; initech may call back one other host; globex has no webhook secret.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import redis
from pydantic import SecretStr

from fleetline import SIGNATURE_HEADER, TIMESTAMP_HEADER, JobStatus, SpecError, verify_webhook
from fleetline.producer.api_keys import ApiKeys
from fleetline.shared import keys
from fleetline.shared.api_settings import ApiSettings
from fleetline.shared.state import AuditEntry, StateStore
from fleetline.workers.callbacks import CallbackSender
from tests.integration.conftest import FleetFactory, RunningFleet
from tests.integration.served_api import serving
from tests.integration.test_cost_control import brief

pytestmark = pytest.mark.integration

SECRET = "whsec-test-0123456789abcdef"
TENANTS = ("acme", "initech", "globex")


@dataclass(frozen=True)
class Received:
    path: str
    headers: httpx.Headers
    body: bytes
    at: float


@dataclass
class Receiver:
    """A local webhook receiver that keeps every request it got."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def got(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def wait_for(self, path: str, count: int, fleet: RunningFleet) -> list[Received]:
        deadline = time.monotonic() + 30
        while len(self.got(path)) < count:
            assert time.monotonic() < deadline, f"{self.requests}\n{fleet.logs()}"
            time.sleep(0.05)
        return self.got(path)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    failures = {"/flaky": 2}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with found.lock:
                found.requests.append(
                    Received(self.path, httpx.Headers(self.headers.items()), body, time.time())
                )
                failing = failures.get(self.path, 0)
                failures[self.path] = failing - 1
            if self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", found.url("/elsewhere"))
            else:
                self.send_response(500 if failing > 0 else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    found = Receiver(ThreadingHTTPServer(("127.0.0.1", 0), Handler))
    thread = threading.Thread(target=found.server.serve_forever, daemon=True)
    thread.start()
    yield found
    found.server.shutdown()
    found.server.server_close()


@pytest.fixture
def fleet(start_fleet: FleetFactory, receiver: Receiver) -> RunningFleet:
    return start_fleet(
        with_beat=False,
        FLEETLINE_API_CALLBACK_HOSTS=json.dumps(
            {"acme": [f"127.0.0.1:{receiver.port}", "*"], "initech": ["hooks.initech.example"]}
        ),
        FLEETLINE_API_WEBHOOK_SECRETS=json.dumps({"acme": SECRET, "initech": SECRET[::-1]}),
        FLEETLINE_API_CALLBACK_ATTEMPTS="3",
        FLEETLINE_API_CALLBACK_BACKOFF_S="0.3",
    )


def callback_audit(fleet: RunningFleet, job_id: str) -> list[AuditEntry]:
    return [e for e in fleet.store.audit(job_id) if e.action.startswith("callback_")]


def settled(fleet: RunningFleet, job_id: str, last: str) -> list[AuditEntry]:
    """The job's callback entries, once the one ending its callback (`last`) is there."""
    deadline = time.monotonic() + 30
    while not any(e.action == last for e in callback_audit(fleet, job_id)):
        assert time.monotonic() < deadline, f"{callback_audit(fleet, job_id)}\n{fleet.logs()}"
        time.sleep(0.1)
    return callback_audit(fleet, job_id)


def verified(request: Received) -> bool:
    headers = request.headers
    return verify_webhook(
        SECRET, headers[TIMESTAMP_HEADER], request.body, headers[SIGNATURE_HEADER]
    )


@pytest.fixture
def serve(fleet: RunningFleet) -> Iterator[httpx.Client]:
    """`fleetline serve` for the fleet, as a client of its base URL."""
    with serving(fleet) as served:
        yield served.http


def _spec(**extra: object) -> dict[str, object]:
    spec = brief(2)
    spec.pop("tenant")
    return {**spec, **extra}


def test_a_job_over_http_posts_its_result_signed_to_a_named_receiver(
    fleet: RunningFleet, receiver: Receiver, serve: httpx.Client
) -> None:
    acme = {"Authorization": f"Bearer {ApiKeys(fleet.store.client).create('acme')[0]}"}
    made = serve.post("/v1/jobs", json=_spec(callback_url=receiver.url("/ok")), headers=acme)
    assert made.status_code == 202, made.text
    job_id = made.json()["job_id"]

    [request] = receiver.wait_for("/ok", 1, fleet)
    assert verified(request), request.headers
    # The body is what GET /v1/jobs/{id}/result answers, the job at its end.
    result = serve.get(f"/v1/jobs/{job_id}/result", headers=acme)
    assert result.status_code == 200
    assert json.loads(request.body) == result.json()
    assert result.json()["status"] == "succeeded"
    assert request.headers["Fleetline-Job-Id"] == job_id
    assert request.headers["Content-Type"] == "application/json"
    # The same request later is a replay: its timestamp no longer verifies.
    headers = request.headers
    stale = int(headers[TIMESTAMP_HEADER]) + 301
    assert not verify_webhook(
        SECRET, headers[TIMESTAMP_HEADER], request.body, headers[SIGNATURE_HEADER], now=stale
    )

    entries = settled(fleet, job_id, "callback_delivered")
    assert [(e.action, e.actor) for e in entries] == [
        ("callback_attempt", "webhook"),
        ("callback_delivered", "webhook"),
    ]
    assert entries[0].fields["attempt"] == "1" and entries[0].fields["status_code"] == "200"
    assert entries[0].fields["address"] == "127.0.0.1"
    time.sleep(1.5)  # three delivery rounds: a delivered callback is sent once
    assert len(receiver.requests) == 1
    assert fleet.store.client.zcard(keys.callbacks_due()) == 0


def test_a_refused_callback_url_is_a_422_naming_it_and_enqueues_nothing(
    fleet: RunningFleet, receiver: Receiver, serve: httpx.Client
) -> None:
    key = ApiKeys(fleet.store.client).create
    acme, initech, globex = ({"Authorization": f"Bearer {key(t)[0]}"} for t in TENANTS)
    refusals = [
        (initech, receiver.url("/ok"), "allow-list"),
        (acme, "ftp://127.0.0.1/x", "http://"),
        # Matched by the pattern `*` only, not named: a loopback address is refused.
        (acme, f"http://127.0.0.2:{receiver.port}/ok", "loopback"),
        (acme, "http://169.254.169.254/latest/meta-data/", "link-local"),
        # globex has no webhook secret (nor an allow-list).
        (globex, receiver.url("/ok"), "no webhook secret"),
    ]
    for auth, url, reason in refusals:
        refused = serve.post("/v1/jobs", json=_spec(callback_url=url), headers=auth)
        assert refused.status_code == 422, (url, refused.text)
        [error] = refused.json()["errors"]
        assert error["field"] == "callback_url" and reason in error["reason"], (url, error)
    with pytest.raises(SpecError) as raised:
        fleet.producer.submit(brief(2, tenant="acme", callback_url="http://10.0.0.1/x"))
    assert raised.value.errors[0][0] == "callback_url"
    assert not list(fleet.store.client.scan_iter(match="fl:job:*")), "nothing was recorded"


def test_a_failing_receiver_is_retried_with_backoff_until_it_answers(
    fleet: RunningFleet, receiver: Receiver
) -> None:
    spec = brief(2, tenant="acme", callback_url=receiver.url("/flaky"))
    job_id = fleet.producer.submit(spec).job_id
    requests = receiver.wait_for("/flaky", 3, fleet)
    assert all(verified(r) for r in requests)
    assert [r.headers["Fleetline-Attempt"] for r in requests] == ["1", "2", "3"]
    assert len({json.loads(r.body)["job_id"] for r in requests}) == 1

    entries = settled(fleet, job_id, "callback_delivered")
    attempts = [e.fields for e in entries if e.action == "callback_attempt"]
    assert [(a["attempt"], a["status_code"]) for a in attempts] == [
        ("1", "500"),
        ("2", "500"),
        ("3", "200"),
    ]
    waits = [float(a["retry_in_s"]) for a in attempts[:2]]
    assert waits[1] > waits[0] > 0, "the wait doubles"
    assert "retry_in_s" not in attempts[2]
    for before, after, wait in zip(requests, requests[1:], waits, strict=False):
        assert after.at - before.at >= wait, "no attempt came before its backoff was over"
    assert entries[-1].action == "callback_delivered" and entries[-1].fields["attempts"] == "3"
    assert fleet.store.get(job_id).status is JobStatus.SUCCEEDED


def test_a_private_address_a_pattern_allows_is_refused_after_resolution(
    fleet: RunningFleet, receiver: Receiver
) -> None:
    # `localhost` is no address until it is resolved: only `*` lets it through submit.
    url = receiver.url("/ok", host="localhost")
    job_id = fleet.producer.submit(brief(2, tenant="acme", callback_url=url)).job_id
    entries = settled(fleet, job_id, "callback_refused")
    assert [e.action for e in entries] == ["callback_refused"]
    reason = entries[0].fields["reason"]
    assert "localhost resolves to loopback address" in reason and "exactly" in reason
    time.sleep(1.5)  # three delivery rounds: a refused callback is not retried
    assert receiver.requests == [], "no request reached the receiver"
    assert callback_audit(fleet, job_id) == entries
    assert fleet.store.get(job_id).status is JobStatus.SUCCEEDED


def test_a_redirect_is_not_followed(fleet: RunningFleet, receiver: Receiver) -> None:
    spec = brief(2, tenant="acme", callback_url=receiver.url("/redirect"))
    job_id = fleet.producer.submit(spec).job_id
    entries = settled(fleet, job_id, "callback_abandoned")
    attempts = [e.fields for e in entries if e.action == "callback_attempt"]
    assert [a["status_code"] for a in attempts] == ["302", "302", "302"]
    assert all("/elsewhere" in a["error"] and "not followed" in a["error"] for a in attempts)
    assert entries[-1].action == "callback_abandoned"
    assert len(receiver.got("/redirect")) == 3
    assert receiver.got("/elsewhere") == []
    assert fleet.store.client.zcard(keys.callbacks_due()) == 0


def _sender(
    client: redis.Redis, answer: Callable[[httpx.Request], httpx.Response]
) -> CallbackSender:
    api = ApiSettings(
        callback_hosts={"acme": ["hooks.acme.example"]},
        webhook_secrets={"acme": SecretStr(SECRET)},
        callback_backoff_s=100,
    )
    http = httpx.Client(transport=httpx.MockTransport(answer))
    public = [ipaddress.ip_address("93.184.216.34")]
    return CallbackSender(StateStore(client, 60), api, http, resolver=lambda host, port: public)


def _finished_job(client: redis.Redis) -> str:
    store = StateStore(client, finished_ttl_s=60)
    job_id = uuid.uuid4().hex
    fields = {"kind": "k", "tenant": "acme", "callback_url": "https://hooks.acme.example/x"}
    store.create_job(job_id, fields, time.time() + 30, None, "acme")
    assert store.finalize(job_id, JobStatus.SUCCEEDED, 1.0, {"answer": 42}, "test")
    return job_id


def test_a_callback_in_flight_is_sent_by_one_worker_and_keeps_its_job_alive(
    redis_client: redis.Redis,
) -> None:
    job_id = _finished_job(redis_client)
    assert redis_client.ttl(keys.job(job_id)) <= 60
    meanwhile: list[int] = []

    def failing(request: httpx.Request) -> httpx.Response:
        # While this attempt runs, another worker finds nothing to send.
        meanwhile.append(other.deliver_due())
        return httpx.Response(503)

    other = _sender(redis_client, lambda request: httpx.Response(200))
    assert _sender(redis_client, failing).deliver_due() == 1
    assert meanwhile == [0]
    [entry] = [e for e in StateStore(redis_client, 60).audit(job_id) if e.actor == "webhook"]
    assert entry.fields["status_code"] == "503" and float(entry.fields["retry_in_s"]) >= 75
    # The next attempt is minutes away, past the job's own TTL: its keys wait for it.
    for key in (keys.job(job_id), keys.job_audit(job_id)):
        assert redis_client.ttl(key) > 75 + keys.CALLBACK_KEEP_S - 5
    assert other.deliver_due() == 0, "not due yet"


def test_the_callback_of_a_job_that_is_gone_is_dropped(redis_client: redis.Redis) -> None:
    job_id = _finished_job(redis_client)
    redis_client.delete(keys.job(job_id), keys.job_audit(job_id))
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    assert _sender(redis_client, answer).deliver_due() == 1
    assert sent == []
    assert redis_client.zcard(keys.callbacks_due()) == 0
    assert not redis_client.exists(keys.job_audit(job_id)), "no audit trail made anew"
