"""The OpenAI chat-completions provider (also any OpenAI-compatible server, e.g. vLLM).

It makes one attempt per call: the SDK's own retries are off because Celery is the only
retry layer, and SDK exceptions become `shared.errors` classes so that retry policy
follows the exception type (the status mapping is in `http_errors`).
"""

from __future__ import annotations

import time
from typing import Literal

import openai

from fleetline.shared.errors import (
    ModelBadRequest,
    ModelConnectionError,
    ModelError,
    ModelTimeout,
    ProviderServerError,
)
from fleetline.shared.models.base import ModelRequest, ModelResponse, render_messages
from fleetline.shared.models.http_errors import SdkClient, error_for_status
from fleetline.shared.models.prices import estimate_tokens

OPENAI_BASE_URL = "https://api.openai.com/v1"

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]


class OpenAIClient(SdkClient):
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
