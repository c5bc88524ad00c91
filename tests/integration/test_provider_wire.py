"""The real OpenAI and Anthropic clients against a local server speaking their wire formats.

The server is scripted per test: a success with usage, 429 with Retry-After, 5xx, 401, and
an answer slower than the call's timeout. It records every request it receives, so the
tests can check what was sent and that the SDKs made exactly one attempt.
"""

from __future__ import annotations

import email.utils
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from fleetline.shared.errors import (
    ModelAuthError,
    ModelBadRequest,
    ModelTimeout,
    ProviderServerError,
    RateLimited,
)
from fleetline.shared.models.anthropic_client import AnthropicClient
from fleetline.shared.models.base import ModelClient, ModelRequest
from fleetline.shared.models.http_errors import parse_retry_after
from fleetline.shared.models.openai_client import OpenAIClient

pytestmark = pytest.mark.integration

ANSWER = '{"label": "finance", "confidence": 0.9, "keywords": ["revenue"]}'
DOCUMENT = "Acme Corp reported revenue of $4.2 million in 2023."


@dataclass
class Script:
    """What the fake provider answers, and what it has received."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    slow: bool = False
    received: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close, so no test leaves one behind.
    daemon_threads = False
    script: Script

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A slow answer written after the client gave up fails; that is expected.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        script = self.server.script
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        script.received.append(
            {
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        if script.slow:
            script.release.wait(10)
        anthropic = self.path.endswith("/messages")
        if script.status == 200:
            payload = _anthropic_ok(body) if anthropic else _openai_ok(body)
        elif anthropic:
            payload = {"type": "error", "error": {"type": "api_error", "message": "scripted"}}
        else:
            payload = {"error": {"message": "scripted", "type": "error", "code": None}}
        data = json.dumps(payload).encode()
        self.send_response(script.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in script.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _openai_ok(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49},
    }


def _anthropic_ok(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": ANSWER}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 42, "output_tokens": 7},
    }


@dataclass
class Provider:
    name: str
    client: ModelClient
    script: Script


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.script = Script()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.script.release.set()
        srv.shutdown()
        srv.server_close()
        thread.join()


@pytest.fixture(params=["openai", "anthropic"])
def provider(request: pytest.FixtureRequest, server: _Server) -> Iterator[Provider]:
    host, port = server.server_address[:2]
    root = f"http://{host!s}:{port}"
    client: OpenAIClient | AnthropicClient
    if request.param == "openai":
        client = OpenAIClient(f"{root}/v1", "test-key")
    else:
        client = AnthropicClient(root, "test-key")
    with client:
        yield Provider(request.param, client, server.script)


def _request(timeout_s: float = 5.0) -> ModelRequest:
    return ModelRequest(
        model="our-key",
        api_model="provider-model-id",
        worker_type="classification",
        instruction="Classify the document.",
        document=DOCUMENT,
        max_output_tokens=123,
        timeout_s=timeout_s,
    )


def test_success_returns_text_and_usage_and_sends_the_request(provider: Provider) -> None:
    response = provider.client.complete(_request())
    assert response.text == ANSWER
    assert (response.tokens_in, response.tokens_out) == (42, 7)
    assert response.model == "our-key"
    [sent] = provider.script.received
    body = sent["body"]
    assert body["model"] == "provider-model-id"
    assert body["max_tokens"] == 123
    if provider.name == "openai":
        assert sent["path"] == "/v1/chat/completions"
        system, user = body["messages"]
        assert system["role"] == "system"
        assert "JSON" in system["content"]
        assert user["role"] == "user"
        assert DOCUMENT in user["content"]
        assert sent["headers"]["authorization"] == "Bearer test-key"
    else:
        assert sent["path"] == "/v1/messages"
        assert "JSON" in body["system"]
        [user] = body["messages"]
        assert user["role"] == "user"
        assert DOCUMENT in user["content"]
        # anthropic 2.x sends the API key as a bearer token, not as x-api-key.
        assert sent["headers"]["authorization"] == "Bearer test-key"


def test_rate_limit_carries_retry_after_and_is_not_retried(provider: Provider) -> None:
    provider.script.status = 429
    provider.script.headers = {"Retry-After": "7"}
    with pytest.raises(RateLimited) as info:
        provider.client.complete(_request())
    assert info.value.retry_after_s == 7
    assert len(provider.script.received) == 1


@pytest.mark.parametrize("status", [500, 503])
def test_server_error_is_retryable_and_not_retried(provider: Provider, status: int) -> None:
    provider.script.status = status
    with pytest.raises(ProviderServerError):
        provider.client.complete(_request())
    assert len(provider.script.received) == 1


def test_overloaded_529_is_a_server_error(provider: Provider) -> None:
    provider.script.status = 529
    with pytest.raises(ProviderServerError):
        provider.client.complete(_request())
    assert len(provider.script.received) == 1


@pytest.mark.parametrize(("status", "error"), [(401, ModelAuthError), (403, ModelAuthError)])
def test_refused_credentials_are_permanent(
    provider: Provider, status: int, error: type[Exception]
) -> None:
    provider.script.status = status
    with pytest.raises(error):
        provider.client.complete(_request())
    assert len(provider.script.received) == 1


def test_other_client_errors_are_bad_requests(provider: Provider) -> None:
    provider.script.status = 400
    with pytest.raises(ModelBadRequest):
        provider.client.complete(_request())


def test_slow_answer_times_out_at_the_call_timeout(provider: Provider) -> None:
    provider.script.slow = True
    started = time.monotonic()
    with pytest.raises(ModelTimeout):
        provider.client.complete(_request(timeout_s=0.3))
    # Generous bound: the point is that it gives up near 0.3 s, not after the 10 s hang.
    assert time.monotonic() - started < 3
    assert len(provider.script.received) == 1


def test_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after": "7"}) == 7
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    in_30s = email.utils.formatdate(time.time() + 30, usegmt=True)
    parsed = parse_retry_after({"retry-after": in_30s})
    assert parsed is not None
    assert 25 < parsed <= 30
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert parse_retry_after({"retry-after": past}) == 0
