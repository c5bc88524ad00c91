"""What both SDK-based providers share: HTTP statuses as our errors, and closing.

429            -> RateLimited (with the provider's Retry-After)
401, 403       -> ModelAuthError
408            -> ModelTimeout
409, 5xx       -> ProviderServerError (Retry-After kept when sent)
any other 4xx  -> ModelBadRequest
"""

from __future__ import annotations

import datetime
import email.utils
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from fleetline.shared.errors import (
    ModelAuthError,
    ModelBadRequest,
    ModelError,
    ModelTimeout,
    ProviderServerError,
    RateLimited,
)


class SdkClient:
    """A provider client holding an SDK client (`self._sdk`) with a connection pool."""

    _sdk: Any

    def close(self) -> None:
        """Close the connection pool."""
        self._sdk.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


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
