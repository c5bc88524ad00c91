"""Job callbacks: a finished job's result POSTed, signed, to its `callback_url`.

finalize_job.lua makes a job with a callback due at its end, whoever ended it (its
then-step, the deadline watchdog, a cancel). Every worker runs a delivery thread that
claims due callbacks one at a time (callback_claim.lua moves a claimed one ahead by a
lease, so no two workers POST it at once) and records each attempt in the job's audit
(callback_record.lua). The body is the job as `GET /v1/jobs/{id}/result` answers it.

    2xx              delivered (`callback_delivered`)
    anything else    retried after a backoff that doubles from callback_backoff_s (with
                     jitter; a Retry-After is honoured up to the ceiling), abandoned
                     (`callback_abandoned`) after callback_attempts attempts
    refused          off the tenant's allow-list, no webhook secret, or resolved to a
                     loopback/private/link-local/... address by a host the allow-list does
                     not name exactly (`callback_refused`): never retried

Redirects are not followed. The host is resolved here, each address checked, and the
request sent to the checked address (with the URL's Host header, and its host name for
TLS SNI and certificate checks), so DNS that changes after the check cannot send the
request elsewhere. Proxies from the environment are ignored for the same reason.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field

import httpx
from redis.exceptions import RedisError

from fleetline.shared import keys
from fleetline.shared.api_settings import ApiSettings
from fleetline.shared.callback_hosts import (
    parse_callback_url,
)
from fleetline.shared.errors import JobNotFound
from fleetline.shared.scripts import load_script
from fleetline.shared.signed_post import (
    CallbackRefused,
    Resolver,
    checked_address,
    resolve,
    signed_request,
)
from fleetline.shared.state import StateStore

log = logging.getLogger(__name__)

ACTOR = "webhook"
# How often each worker looks for due callbacks.
POLL_S = 0.5


def backoff_s(
    attempt: int, api: ApiSettings, retry_after_s: float | None = None, rng: float | None = None
) -> float:
    """The wait after failed attempt number `attempt` (1: the first)."""
    delay = min(api.callback_backoff_max_s, api.callback_backoff_s * 2.0 ** (attempt - 1))
    # Jitter takes off up to a quarter, so each wait stays longer than the one before.
    delay *= 0.75 + 0.25 * (random.random() if rng is None else rng)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, api.callback_backoff_max_s))
    return delay


@dataclass(frozen=True)
class Verdict:
    """What came of one attempt, and the fields of its audit entry."""

    outcome: str  # delivered | retry | abandoned | refused
    fields: dict[str, str] = field(default_factory=dict)
    retry_in_s: float = 0.0


def failed(
    attempt: int, api: ApiSettings, fields: dict[str, str], retry_after_s: float | None = None
) -> Verdict:
    """A failed attempt: retried after its backoff, or abandoned after the last one."""
    if attempt >= api.callback_attempts:
        return Verdict("abandoned", fields)
    wait = backoff_s(attempt, api, retry_after_s)
    return Verdict("retry", {**fields, "retry_in_s": f"{wait:.3f}"}, wait)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


class CallbackSender:
    """Sends the due callbacks of a fleet; one per delivery thread."""

    def __init__(
        self, store: StateStore, api: ApiSettings, http: httpx.Client, resolver: Resolver = resolve
    ) -> None:
        self.store = store
        self.api = api
        self.http = http
        self.resolver = resolver
        self._claim = load_script(store.client, "callback_claim")
        self._record = load_script(store.client, "callback_record")
        # An attempt is its resolution and its POST; a worker that died in one gives the
        # callback back when this lapses.
        self.lease_s = 3 * api.callback_timeout_s + 30

    def deliver_due(self) -> int:
        """Attempt every callback due now, one after the other; how many were attempted."""
        attempted = 0
        while claimed := self._claim(
            keys=[keys.callbacks_due(), keys.callback_attempts()], args=[time.time(), self.lease_s]
        ):
            job_id, attempt = _text(claimed[0]), int(claimed[1])
            self.attempt(job_id, attempt)
            attempted += 1
        return attempted

    def attempt(self, job_id: str, attempt: int) -> Verdict:
        """Send the callback of `job_id` once (attempt number `attempt`) and record it."""
        url = self.store.client.hget(keys.job(job_id), "callback_url")
        try:
            job = self.store.get(job_id) if url is not None else None
        except JobNotFound:
            job = None
        if job is None or url is None:
            verdict = Verdict("abandoned", {"error": "the job is gone"})
        else:
            body = job.model_dump_json().encode()
            verdict = self._send(body, job_id, job.tenant, _text(url), attempt)
        self._write(job_id, attempt, verdict)
        return verdict

    def _send(self, body: bytes, job_id: str, tenant: str, url: str, attempt: int) -> Verdict:
        api = self.api
        # The settings may have changed since the job was submitted: checked again.
        refused = api.callback_refusal(tenant, url)
        secret = api.webhook_secret(tenant)
        if refused is not None or secret is None:
            return Verdict("refused", {"reason": refused or "no webhook secret"})
        target = parse_callback_url(url)
        try:
            address = checked_address(target, api.callback_patterns(tenant), self.resolver)
        except CallbackRefused as exc:
            return Verdict("refused", {"reason": str(exc)})
        except OSError as exc:
            return failed(attempt, api, {"error": f"cannot resolve {target.host}: {exc}"})
        headers = {"Fleetline-Job-Id": job_id, "Fleetline-Attempt": str(attempt)}
        request = signed_request(self.http, target, address, body, secret, headers)
        fields = {"address": str(address)}
        try:
            # Streamed and closed unread: a receiver's answer is its status, not its body.
            response = self.http.send(request, stream=True)
            response.close()
        except httpx.HTTPError as exc:
            return failed(attempt, api, {**fields, "error": f"{type(exc).__name__}: {exc}"})
        fields["status_code"] = str(response.status_code)
        if response.is_success:
            return Verdict("delivered", fields)
        if 300 <= response.status_code < 400:
            where = response.headers.get("location", "")
            fields["error"] = f"redirect to {where!r} not followed"
        else:
            fields["error"] = f"HTTP {response.status_code}"
        return failed(attempt, api, fields, _retry_after(response))

    def _write(self, job_id: str, attempt: int, verdict: Verdict) -> None:
        now = time.time()
        reply = self._record(
            keys=[
                keys.job(job_id),
                keys.job_audit(job_id),
                keys.job_outcomes(job_id),
                keys.callbacks_due(),
                keys.callback_attempts(),
            ],
            args=[
                job_id,
                attempt,
                verdict.outcome,
                json.dumps(verdict.fields),
                now + verdict.retry_in_s,
                keys.CALLBACK_KEEP_S,
                ACTOR,
                now,
            ],
        )
        if int(reply) == -1:
            log.warning("callback of job %s dropped: the job's record is gone", job_id)
        elif verdict.outcome in ("abandoned", "refused"):
            log.warning("callback of job %s %s: %s", job_id, verdict.outcome, verdict.fields)


def keep_delivering(
    store: StateStore, api: ApiSettings, stop: threading.Event | None = None
) -> None:
    """Deliver due callbacks every POLL_S until `stop` is set: a worker's daemon thread."""
    stop = stop or threading.Event()
    # No keep-alive: a connection is to an address, and one made for one host's TLS
    # name must never carry a request for another host at the same address.
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(
        timeout=api.callback_timeout_s, follow_redirects=False, trust_env=False, limits=limits
    ) as http:
        sender = CallbackSender(store, api, http)
        while not stop.wait(POLL_S):
            try:
                sender.deliver_due()
            except RedisError:
                pass  # Redis is away: the next round tries again
            except Exception:
                log.exception("job callbacks failed; they are tried again next round")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
