"""The OpenAI chat-completions provider (also any OpenAI-compatible server, e.g. vLLM).

It makes one attempt per call: the SDK's own retries are off because Celery is the only
retry layer, and SDK exceptions become `shared.errors` classes so that retry policy
follows the exception type. The status mapping is shared with the Anthropic client.
"""

from __future__ import annotations

import datetime
import email.utils
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Literal

import openai

from shared.errors import (
    ModelAuthError,
    ModelBadRequest,
    ModelConnectionError,
    ModelError,
    ModelTimeout,
    ProviderServerError,
    RateLimited,
)
from shared.models.base import ModelRequest, ModelResponse, render_messages
from shared.models.prices import estimate_tokens

OPENAI_BASE_URL = "https://api.openai.com/v1"

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]


class OpenAIClient:
    """A ModelClient for the OpenAI chat-completions API.

    Args:
        base_url: the API root including `/v1`; None means OpenAI itself.
        api_key: the bearer token.
        max_tokens_field: `max_tokens` is what OpenAI-compatible servers accept; OpenAI's
            o-series models need `max_completion_tokens`.
        json_mode: ask for `response_format={"type": "json_object"}` (not every server has it).
    """

    def __init__(
        self,
        base_url: str | None,
        api_key: str,
        *,
        max_tokens_field: MaxTokensField = "max_tokens",
        json_mode: bool = False,
    ) -> None:
        self._sdk = openai.OpenAI(
            api_key=api_key, base_url=base_url or OPENAI_BASE_URL, max_retries=0
        )
        self._max_tokens_field = max_tokens_field
        self._json_mode = json_mode

    def complete(self, request: ModelRequest) -> ModelResponse:
        """Make one chat-completions call; raise a `ModelError` subclass on failure."""
        system, user = render_messages(request)
        extra: dict[str, object] = {self._max_tokens_field: request.max_output_tokens}
        if self._json_mode:
            extra["response_format"] = {"type": "json_object"}
        started = time.monotonic()
        try:
            completion = self._sdk.chat.completions.create(
                model=request.api_model,
                messages=[
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
                timeout=request.timeout_s,
                extra_body=extra,
            )
        except openai.OpenAIError as exc:
            raise _translate(exc) from exc
        latency_ms = (time.monotonic() - started) * 1000
        if not completion.choices:
            raise ProviderServerError("openai: the response has no choices")
        text = completion.choices[0].message.content or ""
        usage = completion.usage
        # Some compatible servers omit usage; an estimate keeps the spend ledger honest.
        tokens_in = usage.prompt_tokens if usage else estimate_tokens(system + user)
        tokens_out = usage.completion_tokens if usage else estimate_tokens(text)
        return ModelResponse(
            text=text,
            model=request.model,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            latency_ms=latency_ms,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._sdk.close()

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _translate(exc: openai.OpenAIError) -> ModelError:
    # APITimeoutError subclasses APIConnectionError, so it is tested first.
    if isinstance(exc, openai.APITimeoutError):
        return ModelTimeout(f"openai: {exc}")
    if isinstance(exc, openai.APIConnectionError):
        return ModelConnectionError(f"openai: {exc}")
    if isinstance(exc, openai.APIStatusError):
        return error_for_status("openai", exc.status_code, exc.message, exc.response.headers)
    if isinstance(exc, openai.APIResponseValidationError):
        return ProviderServerError(f"openai: malformed response: {exc}")
    return ModelBadRequest(f"openai: {exc}")


def error_for_status(
    provider: str, status: int, message: str, headers: Mapping[str, str]
) -> ModelError:
    """The `ModelError` for an HTTP error status, with the provider's Retry-After.

    Args:
        provider: named in the message.
        status: the HTTP status code.
        message: the provider's explanation.
        headers: response headers, read for `retry-after` / `retry-after-ms`.
    """
    text = f"{provider}: HTTP {status}: {message}"
    if status == 429:
        return RateLimited(text, retry_after_s=parse_retry_after(headers))
    if status in (401, 403):
        return ModelAuthError(text)
    # 408 and 409 are transient on these APIs; both SDKs retry them by default too.
    if status == 408:
        return ModelTimeout(text)
    if status == 409 or status >= 500:
        error = ProviderServerError(text)
        error.retry_after_s = parse_retry_after(headers)
        return error
    return ModelBadRequest(text)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" dates parse naive; HTTP dates are always UTC
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - time.time())
