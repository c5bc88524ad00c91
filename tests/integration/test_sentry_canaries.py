"""Sentry as a fleet reports to it: real workers send their errors, log events, breadcrumbs
and performance transactions to a local server speaking Sentry's envelope endpoint, and
none of a set of canaries (a document, a prompt, a secret of the process) is in any of it."""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from fleetline.shared.schemas import JobStatus, OutcomeStatus
from tests.integration.conftest import FleetFactory

pytestmark = pytest.mark.integration

DOCUMENT = "The zebraharbour memo says revenue fell by 41 percent in the third quarter"
PROMPT = "Summarise it as the platypusgarden auditor would, naming every board member"
SECRET = "pk_live_quokkamoonbeam_8812"
# A piece of each that is in nothing else: finding one means the canary leaked.
CANARIES = ("zebraharbour", "platypusgarden", "quokkamoonbeam")


class Envelopes:
    """What a Sentry server was sent: each envelope's items, as (header, payload)."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self._lock = threading.Lock()

    def add(self, body: bytes) -> None:
        with self._lock:
            self.raw.append(body)

    def items(self) -> list[tuple[dict[str, Any], Any]]:
        found = []
        for body in list(self.raw):
            lines = body.split(b"\n")
            rest = lines[1:]
            while len(rest) >= 2 and rest[0].strip():
                header = json.loads(rest[0])
                payload = rest[1]
                try:
                    found.append((header, json.loads(payload)))
                except ValueError:
                    found.append((header, payload))
                rest = rest[2:]
        return found

    def of_type(self, kind: str) -> list[Any]:
        return [payload for header, payload in self.items() if header.get("type") == kind]


@pytest.fixture
def sentry_server() -> Iterator[tuple[str, Envelopes]]:
    received = Envelopes()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if self.path.endswith("/envelope/"):
                received.add(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"id": "0"}')

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://public@127.0.0.1:{server.server_port}/42", received
    server.shutdown()
    server.server_close()


def test_no_canary_reaches_sentry_from_a_failing_step(
    start_fleet: FleetFactory, sentry_server: tuple[str, Envelopes]
) -> None:
    dsn, received = sentry_server
    fleet = start_fleet(
        with_beat=False,
        FLEETLINE_APP="tests.integration.leaky_fleet:fleet",
        FLEETLINE_SENTRY_DSN=dsn,
        FLEETLINE_SENTRY_TRACES_SAMPLE_RATE="1.0",
        PAYMENTS_API_KEY=SECRET,
    )
    spec = {"kind": "leaky_job", "input": {"text": DOCUMENT, "prompt": PROMPT}, "deadline_s": 20}
    job = fleet.wait(fleet.producer.submit(spec).job_id)
    step = next(o for o in job.subtasks if o.subtask_id == "leak")
    assert step.status is OutcomeStatus.FAILED, fleet.logs()
    assert job.status in (JobStatus.DEGRADED, JobStatus.FAILED)

    deadline = time.monotonic() + 30
    while not (received.of_type("event") and received.of_type("transaction")):
        assert time.monotonic() < deadline, f"Sentry got {received.raw!r}"
        time.sleep(0.2)
    fleet.fleet.stop()  # the workers flush what they still hold

    events = received.of_type("event")
    logged = [e for e in events if e.get("logentry", {}).get("message", "").startswith("lookup")]
    assert logged, "the tool's error log reached Sentry as an event"
    assert logged[0]["logentry"]["message"] == "lookup failed for %s with key %s"
    exceptions = [v for e in logged for v in e.get("exception", {}).get("values", [])]
    assert [x["type"] for x in exceptions] == ["ValueError"], "with its exception"
    crumbs = [c for e in events for c in e.get("breadcrumbs", {}).get("values", [])]
    assert "reading %s for %s" in [c.get("message") for c in crumbs], "and its breadcrumb"
    assert received.of_type("transaction"), "performance traces are on"

    everything = b"\n".join(received.raw)
    leaked = [c for c in CANARIES if c.encode() in everything]
    assert leaked == [], f"{leaked} reached Sentry"
