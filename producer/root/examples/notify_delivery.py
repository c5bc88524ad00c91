"""The example's two action tools, as plain functions: a signed webhook and an email.

Each receives the action's arguments and the supervisor's `idempotency_key`, the same for
every attempt of one action: the webhook sends it as `Idempotency-Key`, the email as its
Message-ID, so that a receiver sees a resent action as the one it already has. A failure
another attempt may get past (a connection refused, a 5xx, a 429, an SMTP server that
hung up) raises RetryableToolError; any other (a refused host, a 4xx, a redirect, a
recipient refused) PermanentToolError.
"""

from __future__ import annotations

import json
import smtplib
from email.message import EmailMessage
from typing import Any

import httpx

from fleetline import PermanentToolError, RetryableToolError
from fleetline.shared.callback_hosts import Allowance, allowance, parse_callback_url
from fleetline.shared.fleet.supervised import ACTION_ID_ARG, KEY_ARG
from fleetline.shared.settings import get_settings
from fleetline.shared.signed_post import CallbackRefused, checked_address, resolve, signed_request

IDEMPOTENCY_HEADER = "Idempotency-Key"


def post_webhook(args: dict[str, Any]) -> dict[str, Any]:
    """POST the notification, signed, to `url` (a host the supervisor allow-lists)."""
    settings = get_settings().supervisor
    key = str(args[KEY_ARG])
    try:
        target = parse_callback_url(str(args.get("url", "")))
    except ValueError as exc:
        raise PermanentToolError(f"url: {exc}") from None
    # Checked again here: the settings may have changed since the review.
    if allowance(settings.allowed_hosts, target) is Allowance.REFUSED:
        raise PermanentToolError(f"host {target.host_header} is not allow-listed")
    try:
        address = checked_address(target, settings.allowed_hosts, resolve)
    except CallbackRefused as exc:
        raise PermanentToolError(str(exc)) from None
    except OSError as exc:
        raise RetryableToolError(f"cannot resolve {target.host}: {exc}") from None
    if settings.webhook_secret is None:
        raise PermanentToolError("FLEETLINE_SUPERVISOR_WEBHOOK_SECRET is not set")
    body = json.dumps(
        {
            "action_id": args.get(ACTION_ID_ARG),
            "message": args.get("body", ""),
            "amount": args.get("amount"),
        },
        sort_keys=True,
    ).encode()
    secret = settings.webhook_secret.get_secret_value()
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(
        timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False, limits=limits
    ) as http:
        request = signed_request(http, target, address, body, secret, {IDEMPOTENCY_HEADER: key})
        try:
            response = http.send(request)
        except httpx.HTTPError as exc:
            raise RetryableToolError(f"{type(exc).__name__}: {exc}") from None
    code = response.status_code
    if response.is_success:
        return {"status_code": code, "address": str(address), "idempotency_key": key}
    if 300 <= code < 400:
        raise PermanentToolError(
            f"redirect to {response.headers.get('location', '')!r} not followed"
        )
    if code == 429 or code >= 500:
        raise RetryableToolError(f"HTTP {code}")
    raise PermanentToolError(f"HTTP {code}")


def message_id(key: str) -> str:
    """The email's Message-ID: stable for every attempt of one action."""
    return f"<{key}@fleetline>"


def send_email(args: dict[str, Any]) -> dict[str, Any]:
    """Send the notification by SMTP to `to`, through the configured server."""
    settings = get_settings().supervisor
    key = str(args[KEY_ARG])
    mail = EmailMessage()
    try:
        mail["From"] = settings.mail_from
        mail["To"] = str(args.get("to", ""))
        mail["Subject"] = str(args.get("subject", "Notification"))
        mail["Message-ID"] = message_id(key)
        mail[IDEMPOTENCY_HEADER] = key
    except ValueError as exc:  # a header with a line break in it: never sent
        raise PermanentToolError(f"invalid header: {exc}") from None
    mail.set_content(str(args.get("body", "")))
    try:
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_s
        ) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_user and settings.smtp_password is not None:
                smtp.login(settings.smtp_user, settings.smtp_password.get_secret_value())
            refused = smtp.send_message(mail)
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
        raise PermanentToolError(f"refused by the SMTP server: {exc}") from None
    except smtplib.SMTPResponseException as exc:
        if exc.smtp_code >= 500:
            raise PermanentToolError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from None
        raise RetryableToolError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise RetryableToolError(f"SMTP: {type(exc).__name__}: {exc}") from None
    if refused:
        raise PermanentToolError(f"recipients refused: {sorted(refused)}")
    return {"message_id": message_id(key), "to": mail["To"], "idempotency_key": key}
