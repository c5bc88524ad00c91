"""A local OpenAI-compatible chat-completions server that enforces a provider's rate limits.

It speaks the wire format the real `OpenAIClient` uses (POST `/v1/chat/completions`) and
limits tokens per minute (TPM) and, optionally, requests per minute (RPM) the way a
provider does, per calendar-minute window (`floor(unix_time / 60)`, the fleet's own
alignment):

* on arrival a request counts its prompt with the server's own tokenizer (`count_tokens`:
  about four characters a token for ASCII, one per other character, plus 4 per message;
  never more than the UTF-8 bytes + 8 per message the fleet reserves) plus its
  `max_tokens`;
* when that would take the window past the limit it is answered 429, with `Retry-After`
  (whole seconds to the window's end) and an OpenAI-style error body;
* otherwise it is answered 200 with a JSON content (`{"label": ...}`) and its `usage`, and
  the window is reconciled down to the prompt and completion tokens actually used.

Everything it received is recorded, thread-safely: per window, what was answered and
what was refused, and each request's tokens and text (tests look for a document's marker
to tell whether a step called at all).

    server = start_rate_server(tpm=12_000)
    ... FLEETLINE_OPENAI_BASE_URL=server.url ...
    server.answered, server.rejected, server.windows
    server.stop()
"""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

WINDOW_S = 60
# Tokens a message's framing costs on this server (the fleet's bound allows 8).
MESSAGE_TOKENS = 4


def window_of(at: float) -> int:
    """The calendar-minute window a moment falls in (the fleet's alignment)."""
    return math.floor(at / WINDOW_S)


def seconds_left_in_window(at: float | None = None) -> float:
    """How long until the current window ends."""
    now = time.time() if at is None else at
    return (window_of(now) + 1) * WINDOW_S - now


def count_tokens(text: str) -> int:
    """This server's tokenizer: each run of ASCII characters is a token per four of them
    (rounded up), every other character a token of its own.

    It is never above the UTF-8 length, the bound the fleet reserves for a text.
    """
    tokens = 0
    ascii_run = 0
    for char in text:
        if ord(char) < 128:
            ascii_run += 1
            continue
        tokens += math.ceil(ascii_run / 4) + 1
        ascii_run = 0
    return tokens + math.ceil(ascii_run / 4)


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """The prompt tokens of a chat request: each message's text and its framing."""
    return sum(count_tokens(_content(m)) + MESSAGE_TOKENS for m in messages)


@dataclass(frozen=True)
class Window:
    """One minute on the server: requests answered and refused, and tokens counted (held
    on arrival, settled to the usage once answered)."""

    answered: int = 0
    rejected: int = 0
    tokens: int = 0
    # The most the window held at once (tokens of answered calls plus in-flight holds).
    peak_tokens: int = 0

    @property
    def requests(self) -> int:
        return self.answered + self.rejected


@dataclass(frozen=True)
class Received:
    """One request, as the server counted and answered it."""

    window: int
    status: int
    prompt_tokens: int
    max_tokens: int
    completion_tokens: int
    # Every message's text, joined (tests search it for a document's marker).
    text: str
    at: float

    @property
    def usage(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class RateServer:
    """The server and its records; build it with `start_rate_server`.

    Args:
        tpm: tokens per minute (prompt + `max_tokens` on arrival, usage once answered).
        rpm: requests per minute, None for no request limit.
        latency_s: how long each answer takes (the hold is in flight meanwhile).
        fill_output: pad each answer with whitespace up to its `max_tokens`, as a model
            that writes to its limit (the usage then equals the call's upper bound).
        label: the answer's `label`.
    """

    def __init__(
        self,
        tpm: int,
        rpm: int | None = None,
        *,
        latency_s: float = 0.0,
        fill_output: bool = False,
        label: str = "finance",
    ) -> None:
        if tpm <= 0 or (rpm is not None and rpm <= 0):
            raise ValueError("tpm and rpm must be positive")
        self.tpm = tpm
        self.rpm = rpm
        self.latency_s = latency_s
        self.fill_output = fill_output
        self.label = label
        self._lock = threading.Lock()
        self._windows: dict[int, Window] = {}
        self._received: list[Received] = []
        self._httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.rate = self
        host, port = self._httpd.server_address[:2]
        self.url = f"http://{host!s}:{port}/v1"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="rate-server",
            daemon=True,
        )
        self._thread.start()

    # --- what it saw ------------------------------------------------------------------

    @property
    def answered(self) -> int:
        """Requests answered 200, over every window."""
        with self._lock:
            return sum(w.answered for w in self._windows.values())

    @property
    def rejected(self) -> int:
        """Requests answered 429, over every window."""
        with self._lock:
            return sum(w.rejected for w in self._windows.values())

    @property
    def windows(self) -> dict[int, Window]:
        """A snapshot of every window that saw a request, by window number."""
        with self._lock:
            return dict(self._windows)

    @property
    def received(self) -> list[Received]:
        """A snapshot of every request, in arrival order."""
        with self._lock:
            return list(self._received)

    def saw(self, marker: str) -> bool:
        """Whether any request carried `marker` in its messages."""
        return any(marker in r.text for r in self.received)

    def summary(self) -> str:
        """The per-window counts, for assertion messages."""
        return ", ".join(
            f"window {n}: {w.answered} answered, {w.rejected} rejected, {w.tokens} tokens "
            f"(peak {w.peak_tokens})"
            for n, w in sorted(self.windows.items())
        )

    def stop(self) -> None:
        """Stop serving and close the socket (idempotent)."""
        if self._thread.is_alive():
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    # --- the limit --------------------------------------------------------------------

    def _admit(self, window: int, prompt: int, max_tokens: int) -> Window | None:
        """Hold the request's tokens in its window: None when held, else the window as it
        stood (the refusal's numbers)."""
        need = prompt + max_tokens
        with self._lock:
            found = self._windows.get(window, Window())
            over_rpm = self.rpm is not None and found.answered + 1 > self.rpm
            if found.tokens + need > self.tpm or over_rpm:
                self._windows[window] = replace(found, rejected=found.rejected + 1)
                return found
            held = found.tokens + need
            self._windows[window] = replace(
                found,
                answered=found.answered + 1,
                tokens=held,
                peak_tokens=max(found.peak_tokens, held),
            )
            return None

    def _settle(self, window: int, held: int, used: int) -> None:
        """Reconcile a held request down to what it used."""
        with self._lock:
            found = self._windows[window]
            self._windows[window] = replace(found, tokens=found.tokens - held + used)

    def _record(self, received: Received) -> None:
        with self._lock:
            self._received.append(received)

    def handle(self, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        """Status, headers and JSON body of the answer to one chat-completions request."""
        now = time.time()
        window = window_of(now)
        messages = body.get("messages") or []
        prompt = prompt_tokens(messages)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
        text = "\n".join(_content(m) for m in messages)
        refused = self._admit(window, prompt, max_tokens)
        if refused is not None:
            self._record(Received(window, 429, prompt, max_tokens, 0, text, now))
            return 429, *self._refusal(refused, prompt + max_tokens, now)
        if self.latency_s:
            time.sleep(self.latency_s)
        content = json.dumps({"label": self.label})
        if self.fill_output and max_tokens > count_tokens(content):
            # Trailing whitespace is still the same JSON; four spaces are one token here.
            content += " " * (4 * (max_tokens - count_tokens(content)))
        completion = min(count_tokens(content), max_tokens) if max_tokens else 0
        self._settle(window, prompt + max_tokens, prompt + completion)
        self._record(Received(window, 200, prompt, max_tokens, completion, text, now))
        return 200, {}, _completion(body, content, prompt, completion)

    def _refusal(
        self, window: Window, requested: int, now: float
    ) -> tuple[dict[str, str], dict[str, Any]]:
        wait = seconds_left_in_window(now)
        over_rpm = self.rpm is not None and window.answered + 1 > self.rpm
        if over_rpm:
            what = f"requests per min (RPM): Limit {self.rpm}, Used {window.answered}"
        else:
            what = (
                f"tokens per min (TPM): Limit {self.tpm}, Used {window.tokens}, "
                f"Requested {requested}"
            )
        headers = {
            # Whole seconds, rounded up: a retry at Retry-After lands in the next window.
            "Retry-After": str(max(1, math.ceil(wait))),
            "x-ratelimit-limit-tokens": str(self.tpm),
            "x-ratelimit-remaining-tokens": str(max(0, self.tpm - window.tokens)),
            "x-ratelimit-reset-tokens": f"{wait:.3f}s",
        }
        if self.rpm is not None:
            headers["x-ratelimit-limit-requests"] = str(self.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, self.rpm - window.answered))
        error = {
            "error": {
                "message": f"Rate limit reached on {what}. Please try again in {wait:.3f}s.",
                "type": "requests" if over_rpm else "tokens",
                "param": None,
                "code": "rate_limit_exceeded",
            }
        }
        return headers, error


def _content(message: dict[str, Any]) -> str:
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content)


def _completion(body: dict[str, Any], content: str, prompt: int, completion: int) -> dict[str, Any]:
    max_tokens = int(body.get("max_tokens") or 0)
    finish = "length" if max_tokens and completion >= max_tokens else "stop"
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


class _HTTPServer(ThreadingHTTPServer):
    # Workers may still be talking when a test ends; their threads must not hold it up.
    daemon_threads = True
    rate: RateServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up mid-answer (its call timed out) is not the server's fault.
        pass


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    # HTTP/1.0: one request a connection, so no worker keeps a handler thread waiting.
    protocol_version = "HTTP/1.0"
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send(400, {}, {"error": {"message": "invalid JSON", "type": "invalid"}})
            return
        if self.path.rstrip("/") != "/v1/chat/completions" or not isinstance(body, dict):
            self._send(404, {}, {"error": {"message": f"no route {self.path}", "type": "nf"}})
            return
        self._send(*self.server.rate.handle(body))

    def _send(self, status: int, headers: dict[str, str], payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def start_rate_server(tpm: int, rpm: int | None = None, **options: Any) -> RateServer:
    """A rate-limited chat-completions server running in a thread of this process; its
    `url` is the base URL (with `/v1`) to give FLEETLINE_OPENAI_BASE_URL."""
    return RateServer(tpm, rpm, **options)


RateServerFactory = Callable[..., RateServer]


@pytest.fixture
def rate_servers() -> Iterator[RateServerFactory]:
    """Start rate-limited servers (`rate_servers(tpm=..., rpm=...)`); all stop at the end."""
    started: list[RateServer] = []

    def start(tpm: int, rpm: int | None = None, **options: Any) -> RateServer:
        server = start_rate_server(tpm, rpm, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
