"""The Anthropic Messages API provider.

Like the OpenAI client it makes one attempt per call (SDK retries off: Celery is the only
retry layer) and turns SDK exceptions into `shared.errors` classes; 529 "overloaded" is a
5xx and so a retryable server error.
"""

from __future__ import annotations

import time

import anthropic

from fleetline.shared.errors import (
    ModelBadRequest,
    ModelConnectionError,
    ModelError,
    ModelTimeout,
    ProviderServerError,
)
from fleetline.shared.models.base import ModelRequest, ModelResponse, render_messages
from fleetline.shared.models.http_errors import SdkClient, error_for_status

ANTHROPIC_BASE_URL = "https://api.anthropic.com"


class AnthropicClient(SdkClient):
    """A ModelClient for the Anthropic Messages API.

    Args:
        base_url: the API root without `/v1`; None means Anthropic itself.
        api_key: the `x-api-key` credential.
    """

    def __init__(self, base_url: str | None, api_key: str) -> None:
        # Explicit key and URL: the SDK then reads no credentials or profiles of its own.
        self._sdk = anthropic.Anthropic(
            api_key=api_key, base_url=base_url or ANTHROPIC_BASE_URL, max_retries=0
        )

    def complete(self, request: ModelRequest) -> ModelResponse:
        """Make one Messages call; raise a `ModelError` subclass on failure."""
        system, user = render_messages(request)
        started = time.monotonic()
        try:
            message = self._sdk.messages.create(
                model=request.api_model,
                system=system,
                messages=[{"role": "user", "content": user}],
                max_tokens=request.max_output_tokens,
                timeout=request.timeout_s,
            )
        except anthropic.AnthropicError as exc:
            raise _translate(exc) from exc
        latency_ms = (time.monotonic() - started) * 1000
        text = "".join(block.text for block in message.content if block.type == "text")
        usage = message.usage
        # Cached prompt tokens are reported apart from input_tokens; count them all so
        # the ledger never undercounts (we set no cache_control, so they are normally 0).
        tokens_in = (
            usage.input_tokens
            + (usage.cache_creation_input_tokens or 0)
            + (usage.cache_read_input_tokens or 0)
        )
        return ModelResponse(
            text=text,
            model=request.model,
            tokens_in=tokens_in,
            tokens_out=usage.output_tokens,
            latency_ms=latency_ms,
        )


def _translate(exc: anthropic.AnthropicError) -> ModelError:
    # APITimeoutError subclasses APIConnectionError, so it is tested first.
    if isinstance(exc, anthropic.APITimeoutError):
        return ModelTimeout(f"anthropic: {exc}")
    if isinstance(exc, anthropic.APIConnectionError):
        return ModelConnectionError(f"anthropic: {exc}")
    if isinstance(exc, anthropic.APIStatusError):
        message = exc.api_message or exc.message
        return error_for_status("anthropic", exc.status_code, message, exc.response.headers)
    if isinstance(exc, anthropic.APIResponseValidationError):
        return ProviderServerError(f"anthropic: malformed response: {exc}")
    return ModelBadRequest(f"anthropic: {exc}")
