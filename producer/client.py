"""A typed client of `fleetline serve`, for services that submit jobs over HTTP.

    with Client("http://fleetline:8077", api_key) as client:
        job_id = client.submit(spec).job_id
        result = client.wait(job_id)

`AsyncClient` has the same methods as coroutines (and `events` as an async iterator). The
API's refusals come back as Fleetline's own exceptions: SpecError (naming every field),
IdempotencyConflict, KillSwitchTripped, JobNotFound, StoreUnavailable, ApiError.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from fleetline.shared.errors import (
    FleetlineError,
    JobNotFound,
    KillSwitchTripped,
    SpecError,
    StoreUnavailable,
    WaitTimeout,
)
from fleetline.shared.schemas import JobResult


class ApiError(FleetlineError):
    """An answer of the API that is none of the known refusals (401 among them)."""

    def __init__(self, status: int, body: str) -> None:
        self.status = status
        super().__init__(f"HTTP {status}: {body[:500]}")


@dataclass(frozen=True)
class Submitted:
    """A submission's answer: the job, its status, and whether this call created it."""

    job_id: str
    status: str
    created: bool


@dataclass(frozen=True)
class Event:
    """One server-sent event of a job: `progress` (a step recorded) or `final`."""

    name: str
    data: dict[str, Any]


def _raise_for(response: httpx.Response) -> None:
    """Turn a refusal into the exception the in-process API raises for it."""
    status = response.status_code
    if status < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    errors = [(e["field"], e["reason"]) for e in body.get("errors", [])] if body else []
    if status in (409, 413, 422) and errors:
        raise SpecError(errors)
    if status == 404:
        raise JobNotFound(f"no job at {response.request.url.path}")
    if status == 429 and body.get("error") == "kill_switch":
        retry = float(response.headers.get("Retry-After", "0"))
        raise KillSwitchTripped(body.get("reason", "kill switch"), time.time() + retry)
    if status == 503:
        raise StoreUnavailable(body.get("reason", "the API's Redis is unavailable"))
    raise ApiError(status, response.text)


def _submission(spec: dict[str, Any], idempotency_key: str | None) -> dict[str, Any]:
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return {"json": spec, "headers": headers}


def _submitted(response: httpx.Response) -> Submitted:
    _raise_for(response)
    data = response.json()
    return Submitted(data["job_id"], data["status"], response.status_code == 202)


def _result(response: httpx.Response) -> JobResult | None:
    _raise_for(response)
    return None if response.status_code == 202 else JobResult.model_validate(response.json())


class _EventLines:
    """Server-sent event lines in, events out (the API sends `event:` then `data:`)."""

    def __init__(self) -> None:
        self.name = ""

    def feed(self, line: str) -> Event | None:
        if line.startswith("event: "):
            self.name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            return Event(self.name, json.loads(line.removeprefix("data: ")))
        return None


class Client:
    """The API over one HTTP connection pool; close it (or use `with`)."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 10.0) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
        )

    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> Submitted:
        """Submit a job spec (without a tenant: the key decides it)."""
        return _submitted(self._http.post("/v1/jobs", **_submission(spec, idempotency_key)))

    def get(self, job_id: str) -> dict[str, Any]:
        """The job's status, completeness and cost so far."""
        response = self._http.get(f"/v1/jobs/{job_id}")
        _raise_for(response)
        data: dict[str, Any] = response.json()
        return data

    def result(self, job_id: str) -> JobResult | None:
        """The finished job, or None while it runs."""
        return _result(self._http.get(f"/v1/jobs/{job_id}/result"))

    def wait(self, job_id: str, timeout_s: float = 60.0, poll_s: float = 0.25) -> JobResult:
        """Poll until the job is finished; WaitTimeout after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (found := self.result(job_id)) is None:
            if time.monotonic() > deadline:
                raise WaitTimeout(f"job {job_id} still running after {timeout_s:g}s")
            time.sleep(poll_s)
        return found

    def cancel(self, job_id: str) -> bool:
        """Cancel the job; False when it had already ended."""
        response = self._http.delete(f"/v1/jobs/{job_id}")
        if response.status_code == 409:
            return False
        _raise_for(response)
        return True

    def events(self, job_id: str) -> Iterator[Event]:
        """The job's progress events as they happen, ending with `final`."""
        with self._http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            parser = _EventLines()
            for line in response.iter_lines():
                if (event := parser.feed(line)) is not None:
                    yield event

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient:
    """The same API for asyncio callers."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 10.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
        )

    async def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> Submitted:
        response = await self._http.post("/v1/jobs", **_submission(spec, idempotency_key))
        return _submitted(response)

    async def get(self, job_id: str) -> dict[str, Any]:
        response = await self._http.get(f"/v1/jobs/{job_id}")
        _raise_for(response)
        data: dict[str, Any] = response.json()
        return data

    async def result(self, job_id: str) -> JobResult | None:
        return _result(await self._http.get(f"/v1/jobs/{job_id}/result"))

    async def wait(self, job_id: str, timeout_s: float = 60.0, poll_s: float = 0.25) -> JobResult:
        deadline = time.monotonic() + timeout_s
        while (found := await self.result(job_id)) is None:
            if time.monotonic() > deadline:
                raise WaitTimeout(f"job {job_id} still running after {timeout_s:g}s")
            await asyncio.sleep(poll_s)
        return found

    async def cancel(self, job_id: str) -> bool:
        response = await self._http.delete(f"/v1/jobs/{job_id}")
        if response.status_code == 409:
            return False
        _raise_for(response)
        return True

    async def events(self, job_id: str) -> AsyncIterator[Event]:
        path = f"/v1/jobs/{job_id}/events"
        async with self._http.stream("GET", path, timeout=None) as response:
            if response.status_code >= 400:
                await response.aread()
                _raise_for(response)
            parser = _EventLines()
            async for line in response.aiter_lines():
                if (event := parser.feed(line)) is not None:
                    yield event

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
