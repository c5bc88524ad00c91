"""`fleetline serve`: jobs from other services over HTTP, each caller a tenant by its key.

The key decides the tenant: a spec never names one, so nobody can spend another tenant's
limits or read its jobs, and another tenant's job answers 404, as an unknown one does.
Every error names the field and the reason; nothing is enqueued for a refused request.
(No `from __future__ import annotations`: FastAPI reads the routes' annotations at run time.)
"""

import json
import math
import time
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse, StreamingResponse
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleetline.producer import http_docs
from fleetline.producer.api_keys import ApiKey, ApiKeys
from fleetline.producer.cancel import cancel_job
from fleetline.producer.submit import Producer
from fleetline.shared import keys
from fleetline.shared.errors import (
    FleetlineError,
    IdempotencyConflict,
    JobNotFound,
    KillSwitchTripped,
    SpecError,
    StoreUnavailable,
)
from fleetline.shared.json_limits import check_text
from fleetline.shared.schemas import JobResult, JobStatus
from fleetline.shared.scripts import load_script
from fleetline.shared.settings import FleetlineSettings
from fleetline.shared.state import StateStore
from fleetline.shared.trace_store import load_trace

# How often a stream of events looks for newly recorded steps.
EVENT_POLL_S = 0.2


def _errors(status: int, errors: list[tuple[str, str]]) -> JSONResponse:
    body = {"errors": [{"field": field, "reason": reason} for field, reason in errors]}
    return JSONResponse(body, status_code=status)


def _unavailable(exc: RedisError) -> HTTPException:
    """503: Redis did not answer (the refusal's body names why)."""
    return HTTPException(503, {"error": "unavailable", "reason": str(exc)})


class _Callers:
    """Who calls (their key), and the jobs they may see (their tenant's only)."""

    def __init__(self, producer: Producer) -> None:
        self.store = producer.store
        self.keys = ApiKeys(producer.store.client)
        self.settings = producer.settings.api
        self._take = load_script(producer.store.client, "api_rate_take")

    def caller(self, authorization: Annotated[str | None, Header()] = None) -> ApiKey:
        scheme, _, key = (authorization or "").partition(" ")
        try:
            found = self.keys.lookup(key.strip()) if scheme.lower() == "bearer" else None
        except RedisError as exc:
            raise _unavailable(exc) from exc
        if found is None:
            raise HTTPException(
                401, {"error": "unauthorized"}, headers={"WWW-Authenticate": "Bearer"}
            )
        self._within_rate(found)
        return found

    def _within_rate(self, who: ApiKey) -> None:
        """429 with Retry-After when the key's bucket is empty."""
        s = self.settings
        try:
            taken, wait_ms = self._take(
                keys=[keys.api_bucket(who.key_id)], args=[time.time(), s.rate_per_s, s.burst]
            )
        except RedisError as exc:
            raise _unavailable(exc) from exc
        if not int(taken):
            retry = str(max(1, math.ceil(int(wait_ms) / 1000)))
            raise HTTPException(429, {"error": "rate_limited"}, headers={"Retry-After": retry})

    def owned(self, job_id: str, who: ApiKey) -> JobResult:
        """The job, when it is the caller's tenant's; else 404, as for an unknown one."""
        try:
            job = self.store.get(job_id)
        except JobNotFound:
            job = None
        except RedisError as exc:
            raise _unavailable(exc) from exc
        if job is None or job.tenant != who.tenant:
            raise HTTPException(404, {"error": "not_found", "job_id": job_id})
        return job


def make_api(settings: FleetlineSettings, producer: Producer | None = None) -> FastAPI:
    """The API of one fleet (its settings bound), submitting through `producer`."""
    producer = producer or Producer.from_settings(settings)
    callers = _Callers(producer)
    owned = callers.owned
    Caller = Annotated[ApiKey, Depends(callers.caller)]
    api = FastAPI(title="Fleetline", version="1", docs_url=None, redoc_url=None)

    @api.exception_handler(StarletteHTTPException)
    async def plain_errors(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # The refusal itself is the body ({"error": ...}), not FastAPI's {"detail": ...}.
        body = exc.detail if isinstance(exc.detail, dict) else {"error": str(exc.detail)}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    body = http_docs.describe(api, settings)

    @api.post(
        "/v1/jobs",
        status_code=202,
        operation_id="submit_job",
        openapi_extra=body,
        responses=http_docs.SUBMIT,
        response_model=None,
    )
    async def submit(
        request: Request,
        who: Caller,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        spec = _spec_of(await request.body(), settings, idempotency_key)
        if isinstance(spec, JSONResponse):
            return spec
        refused = None
        try:
            receipt = producer.submit({**spec, "tenant": who.tenant})
        except FleetlineError as exc:
            refused = _refusal(exc)
            if refused is None:
                raise
        if refused is not None:
            return refused
        if receipt.created:
            return JSONResponse({"job_id": receipt.job_id, "status": "running"}, status_code=202)
        job = owned(receipt.job_id, who)
        return JSONResponse({"job_id": job.job_id, "status": job.status.value}, status_code=200)

    @api.get("/v1/jobs/{job_id}", operation_id="get_job", responses=http_docs.READ)
    def status(job_id: str, who: Caller) -> dict[str, Any]:
        job = owned(job_id, who)
        return {
            "job_id": job.job_id,
            "kind": job.kind,
            "status": job.status.value,
            "completeness": job.completeness,
            "cost_usd": job.cost_usd,
            "steps": {"done": len(job.subtasks)},
            "created_at": job.created_at,
            "finished_at": job.finished_at,
        }

    @api.get(
        "/v1/jobs/{job_id}/result",
        operation_id="get_result",
        responses=http_docs.READ,
        response_model=None,
    )
    def result(job_id: str, who: Caller) -> JSONResponse:
        job = owned(job_id, who)
        if not job.status.terminal:
            return JSONResponse({"job_id": job_id, "status": job.status.value}, status_code=202)
        return JSONResponse(json.loads(job.model_dump_json()))

    @api.delete(
        "/v1/jobs/{job_id}",
        operation_id="cancel_job",
        responses=http_docs.CANCEL,
        response_model=None,
    )
    def cancel(job_id: str, who: Caller) -> JSONResponse:
        owned(job_id, who)
        if not cancel_job(producer.store, job_id, f"api:{who.key_id}"):
            job = owned(job_id, who)
            return JSONResponse(
                {"error": "finished", "job_id": job_id, "status": job.status.value},
                status_code=409,
            )
        return JSONResponse({"job_id": job_id, "status": JobStatus.CANCELLED.value})

    @api.get(
        "/v1/jobs/{job_id}/events",
        operation_id="job_events",
        responses=http_docs.READ,
        response_model=None,
    )
    def events(job_id: str, who: Caller) -> StreamingResponse:
        owned(job_id, who)
        stream = job_events(producer.store, job_id, EVENT_POLL_S)
        return StreamingResponse(stream, media_type="text/event-stream")

    @api.get(
        "/v1/jobs/{job_id}/trace",
        operation_id="get_trace",
        responses=http_docs.TRACE,
        response_model=None,
    )
    def trace(job_id: str, who: Caller) -> JSONResponse:
        owned(job_id, who)
        try:
            found = load_trace(producer.store.client, job_id)
        except RedisError as exc:
            raise _unavailable(exc) from exc
        if found is None:
            # Tracing off (FLEETLINE_TRACE_STORE=off), or the trace has expired.
            raise HTTPException(404, {"error": "no_trace", "job_id": job_id})
        return JSONResponse(found)

    @api.get("/v1/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/v1/readyz", response_model=None)
    def readyz() -> JSONResponse:
        try:
            producer.store.client.ping()
        except RedisError as exc:
            return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready"})

    return api


def _spec_of(
    body: bytes, settings: FleetlineSettings, idempotency_key: str | None
) -> dict[str, Any] | JSONResponse:
    """The job spec a request body holds (its Idempotency-Key in it), or the refusal."""
    limits = settings.limits
    if len(body) > limits.max_input_bytes:
        return _errors(413, [("body", f"over the limit of {limits.max_input_bytes} bytes")])
    try:
        text = body.decode("utf-8")
        spec = check_text(text, limits.max_json_depth, limits.max_input_bytes, name="body")
    except UnicodeDecodeError:
        return _errors(422, [("body", "is not UTF-8 text")])
    except SpecError as exc:
        return _errors(422, exc.errors)
    if not isinstance(spec, dict):
        return _errors(422, [("body", "must be a JSON object (a job spec)")])
    if "tenant" in spec:
        return _errors(422, [("tenant", "comes from the API key; a spec may not name one")])
    if idempotency_key is not None:
        given = spec.get("idempotency_key")
        if given is not None and given != idempotency_key:
            return _errors(422, [("idempotency_key", "differs from the Idempotency-Key header")])
        spec["idempotency_key"] = idempotency_key
    return spec


def _refusal(exc: FleetlineError) -> JSONResponse | None:
    """The HTTP answer to a refused submission; None for an error that is not a refusal."""
    if isinstance(exc, IdempotencyConflict):
        return _errors(409, exc.errors)
    if isinstance(exc, SpecError):
        return _errors(422, exc.errors)
    if isinstance(exc, KillSwitchTripped):
        retry = math.ceil(max(1.0, (exc.resets_at or time.time()) - time.time()))
        return JSONResponse(
            {"error": "kill_switch", "reason": str(exc)},
            status_code=429,
            headers={"Retry-After": str(retry)},
        )
    if isinstance(exc, StoreUnavailable):
        return JSONResponse({"error": "unavailable", "reason": str(exc)}, status_code=503)
    return None


def job_events(store: StateStore, job_id: str, poll_s: float) -> Iterator[str]:
    """Server-sent events: `progress` for every step as it is recorded, then one `final`
    with the job's status and cost; the stream ends with it."""
    # The fan-out's steps and the then-step that closes it.
    total = len(json.loads(store.raw(job_id).get("subtask_ids", "[]"))) + 1
    seen: set[str] = set()
    while True:
        job = store.get(job_id)
        for outcome in job.subtasks:
            if outcome.subtask_id not in seen:
                seen.add(outcome.subtask_id)
                progress = {
                    "done": len(seen),
                    "total": total,
                    "step": outcome.subtask_id,
                    "status": outcome.status.value,
                }
                yield _event("progress", progress)
        if job.status.terminal:
            final = {"job_id": job_id, "status": job.status.value, "cost_usd": job.cost_usd}
            yield _event("final", final)
            return
        time.sleep(poll_s)


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"
