"""What /openapi.json says of the HTTP API beyond its routes: the submit body for each job
kind of the fleet, and the answers each route gives (the refusals included), with the
links from a submitted job to the routes that read it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from fleetline.shared.schemas import JobSpec
from fleetline.shared.settings import FleetlineSettings


class Accepted(BaseModel):
    job_id: str
    status: str


class FieldError(BaseModel):
    field: str
    reason: str


class FieldErrors(BaseModel):
    """A refused spec: every field in error, each with its reason."""

    errors: list[FieldError]


class Refusal(BaseModel):
    """Any other refusal: what kind (`unauthorized`, `not_found`, `rate_limited`, ...)."""

    error: str
    reason: str | None = None


# Each route that reads a job is reached from a submitted job's id.
_READERS = {
    "get_job": "the job's status",
    "get_result": "the job's result (202 while it runs)",
    "job_events": "the job's progress, as server-sent events",
    "get_trace": "the job's trace: its spans",
    "cancel_job": "cancel the job",
}

_COMMON: dict[int | str, dict[str, Any]] = {
    401: {"model": Refusal, "description": "No valid API key"},
    429: {"model": Refusal, "description": "Rate limited or kill switch (see Retry-After)"},
    503: {"model": Refusal, "description": "Redis unavailable"},
}

SUBMIT: dict[int | str, dict[str, Any]] = {
    202: {
        "model": Accepted,
        "description": "Accepted: the job runs",
        "links": {
            op: {"operationId": op, "parameters": {"job_id": "$response.body#/job_id"}}
            for op in _READERS
        },
    },
    200: {"model": Accepted, "description": "The job an Idempotency-Key already made"},
    409: {"model": FieldErrors, "description": "Idempotency-Key reused for another spec"},
    413: {"model": FieldErrors, "description": "Body over FLEETLINE_LIMITS_MAX_INPUT_BYTES"},
    422: {"model": FieldErrors, "description": "A bad spec: every field and its reason"},
    **_COMMON,
}

READ: dict[int | str, dict[str, Any]] = {
    404: {"model": Refusal, "description": "No such job for this key's tenant"},
    **_COMMON,
}

TRACE: dict[int | str, dict[str, Any]] = {
    404: {"model": Refusal, "description": "No such job, or no trace kept of it (no_trace)"},
    **_COMMON,
}

CANCEL: dict[int | str, dict[str, Any]] = {
    409: {"model": Refusal, "description": "The job had already ended"},
    **READ,
}


def describe(api: FastAPI, settings: FleetlineSettings) -> dict[str, Any]:
    """The submit route's `openapi_extra` (its body), with the component schemas that body
    refers to added to the api's /openapi.json."""
    body, components = submit_body(settings)
    openapi = api.openapi

    def openapi_with_inputs() -> dict[str, Any]:
        if api.openapi_schema is None:
            schema = openapi()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
        return api.openapi_schema or {}

    api.openapi = openapi_with_inputs  # type: ignore[method-assign]
    return body


def submit_body(settings: FleetlineSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    """POST /v1/jobs's body, and the component schemas it refers to: for each job kind of
    the fleet, a job spec without `tenant` (the key decides it), with the kind's input and
    the limits of these settings."""
    template = "#/components/schemas/{model}"
    components: dict[str, Any] = {}
    variants = []
    for name, kind in sorted(settings.fleet.jobs.items()):
        spec = JobSpec.model_json_schema(ref_template=template)
        fields = spec["properties"]
        fields.pop("tenant")
        fields["latency_profile"] = {"enum": [*sorted(settings.latency_profiles), None]}
        longest = settings.limits.max_deadline_s
        deadline = {"type": "number", "exclusiveMinimum": 0, "maximum": longest}
        fields["deadline_s"] = {"anyOf": [deadline, {"type": "null"}]}
        spec["properties"]["kind"] = {"const": name}
        spec["properties"]["input"] = kind.input.model_json_schema(ref_template=template)
        components.update(spec["properties"]["input"].pop("$defs", {}))
        variants.append(spec)
    schema = variants[0] if len(variants) == 1 else {"oneOf": variants}
    # The route reads its body itself: size and nesting are checked before it is parsed.
    body = {"required": True, "content": {"application/json": {"schema": schema}}}
    return {"requestBody": body}, components
