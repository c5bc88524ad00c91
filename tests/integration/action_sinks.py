"""Local receivers for the supervisor's action tools: an HTTP sink that honours
`Idempotency-Key` (a key seen before is answered 200 and not applied again) and an SMTP
server (aiosmtpd) that keeps every message."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from fleetline import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_webhook


@dataclass
class HttpSink:
    """What reached the sink: every request, and the keys it applied (once each)."""

    secret: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@contextmanager
def http_sink(secret: str) -> Iterator[HttpSink]:
    sink = HttpSink(secret)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            key = self.headers.get("Idempotency-Key", "")
            signed = verify_webhook(
                sink.secret,
                self.headers.get(TIMESTAMP_HEADER, ""),
                body,
                self.headers.get(SIGNATURE_HEADER, ""),
            )
            with sink.lock:
                sink.requests.append({"key": key, "body": body, "signed": signed})
                if signed and key not in sink.applied:
                    sink.applied.append(key)
            self.send_response(200 if signed else 401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class SmtpSink:
    messages: list[Message] = field(default_factory=list)
    port: int = 0


class _Keep:
    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.sink.messages.append(message_from_bytes(envelope.original_content))
        return "250 OK"


@contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    # aiosmtpd checks it is up by connecting to its port: it needs a real one, not 0.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sink = SmtpSink(port=port)
    controller = Controller(_Keep(sink), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
