"""Signed webhooks: how Fleetline signs what it POSTs, and how a receiver checks it.

The signature is an HMAC-SHA256, with the tenant's webhook secret, of the timestamp, a
dot and the raw body; the timestamp travels in its own header and is signed with the
body, so a captured request cannot be replayed once it is older than the tolerance:

    Fleetline-Timestamp: 1767225600
    Fleetline-Signature: v1=<64 hex digits>

A receiver checks the raw body, before parsing it:

    from fleetline import verify_webhook

    ok = verify_webhook(secret, request.headers["Fleetline-Timestamp"], raw_body,
                        request.headers["Fleetline-Signature"])
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Fleetline-Signature"
TIMESTAMP_HEADER = "Fleetline-Timestamp"
# How old (or how far ahead, for clock skew) a signed timestamp may be and still pass.
DEFAULT_TOLERANCE_S = 300.0
_SCHEME = "v1"


def sign_webhook(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """The `Fleetline-Signature` value of `body` sent at `timestamp` (Unix seconds).

    Args:
        secret: the tenant's webhook secret.
        timestamp: the `Fleetline-Timestamp` value.
        body: the request body, byte for byte.
    """
    key = secret.encode() if isinstance(secret, str) else secret
    signed = str(timestamp).encode() + b"." + body
    return f"{_SCHEME}={hmac.new(key, signed, hashlib.sha256).hexdigest()}"


def verify_webhook(
    secret: str | bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """Whether a webhook request is Fleetline's, signed within `tolerance_s` of `now`.

    Args:
        secret: the tenant's webhook secret.
        timestamp: the `Fleetline-Timestamp` header.
        body: the raw request body, before any parsing.
        signature: the `Fleetline-Signature` header (several `v1=` values, comma-separated,
            pass when one matches).
        tolerance_s: how far the timestamp may be from `now`, either way.
        now: the current Unix time (default: the clock).
    """
    try:
        sent = int(timestamp.strip())
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    expected = sign_webhook(secret, sent, body)
    found = False
    for candidate in signature.split(","):
        # Every candidate is compared, in constant time, whatever the first one gave.
        found |= hmac.compare_digest(candidate.strip().encode(), expected.encode())
    return found


def signed_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The headers that sign `body` now."""
    timestamp = int(time.time() if now is None else now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign_webhook(secret, timestamp, body),
    }
