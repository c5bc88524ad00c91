"""The typed boundary: what a job is, what a subtask returns, and what a caller gets back."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from fleetline.shared.callback_hosts import MAX_URL_LENGTH, parse_callback_url
from fleetline.shared.names import NAME_PATTERN


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEGRADED = "degraded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    KILLED = "killed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self not in (JobStatus.PENDING, JobStatus.RUNNING)


class OutcomeStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    INVALID_OUTPUT = "invalid_output"
    CIRCUIT_OPEN = "circuit_open"
    BUDGET_EXCEEDED = "budget_exceeded"
    KILLED = "killed"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JobSpec(_Strict):
    """What a caller asks for. `input` is checked against the kind's own input model."""

    kind: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    input: dict[str, Any]
    tenant: str = Field(default="default", min_length=1, max_length=64, pattern=r"^[\w.-]+$")
    # Numbers are numbers (strict): a string where one belongs ("1") is a caller's bug,
    # refused naming the field rather than guessed at.
    budget_usd: float = Field(default=1.0, gt=0, le=10_000, strict=True)
    max_tokens: int = Field(default=200_000, gt=0, le=100_000_000, strict=True)
    # None: the latency profile's total (8 s for the default, interactive profile).
    deadline_s: float | None = Field(default=None, gt=0, strict=True)
    latency_profile: str | None = Field(default=None, max_length=64)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    priority: int = Field(default=5, ge=0, le=9, strict=True)
    # Where the job's result is POSTed, signed, when it ends; its host must be on the
    # tenant's allow-list (FLEETLINE_API_CALLBACK_HOSTS).
    callback_url: str | None = Field(default=None, max_length=MAX_URL_LENGTH)

    @field_validator("callback_url")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_callback_url(value)
            except ValueError as exc:
                raise PydanticCustomError(
                    "callback_url", "{reason}", {"reason": str(exc)}
                ) from None
        return value


class StepKind(StrEnum):
    AGENT = "agent"
    TOOL = "tool"


class SubtaskSpec(_Strict):
    """One step of a plan, as the worker of its agent or tool receives it.

    Its id is stable for the same input (decomposers are pure). An agent step carries the
    goal its prompt is filled with (`instruction`) and the text it reads; a tool step
    carries the arguments its function is called with.
    """

    id: str = Field(min_length=1, max_length=128, pattern=r"^[\w.:-]+$")
    worker_type: str = Field(pattern=NAME_PATTERN)
    kind: StepKind = StepKind.AGENT
    tier: str | None = None
    instruction: str = ""
    text: str = ""
    args: dict[str, Any] | None = None
    critical: bool = False
    max_output_tokens: int = Field(default=512, gt=0)


# The step payload's version. Workers run this one and the one before it, so that steps
# queued before a rolling upgrade still run on the new workers; a payload newer than the
# worker knows is dead-lettered (`parse_payload`), never read as if it were the old shape.
# Version 1 is the payload before it carried a `version` field.
PAYLOAD_VERSION = 2
OLDEST_PAYLOAD_VERSION = 1


class SubtaskPayload(_Strict):
    """What travels on the wire to a specialist worker."""

    # Strict: a version is compared, never coerced from "2" or True.
    version: int = Field(
        default=PAYLOAD_VERSION, ge=OLDEST_PAYLOAD_VERSION, le=PAYLOAD_VERSION, strict=True
    )
    job_id: str
    tenant: str
    deadline_at: float
    subtask: SubtaskSpec
    # The job's budgets, which every call's reservation is checked against.
    budget_usd: float | None = None
    budget_tokens: int | None = None
    # The job's latency profile lets this call wait to share a batched model call.
    batchable: bool = False
    # Times this step went back to its queue to wait (for a rate window, or for its
    # tenant's fair share): not retries. And how long it has waited for rate windows.
    deferrals: int = Field(default=0, ge=0)
    rate_waited_s: float = Field(default=0.0, ge=0)


class PayloadVersionError(ValueError):
    """A step payload of a version newer than this worker knows."""

    def __init__(self, version: int) -> None:
        super().__init__(
            f"payload version {version} is newer than this worker's {PAYLOAD_VERSION}: "
            "upgrade the worker, then replay the dead letter"
        )
        self.version = version


def parse_payload(raw: Any) -> SubtaskPayload:
    """A step payload as it came off the wire.

    One without `version` is version 1, from a producer older than the field. An older
    payload comes back as the current version: what this worker sends on (a retry, a
    dead letter) is the current shape, with the defaults filled in. Raises
    PayloadVersionError for a newer version than PAYLOAD_VERSION (checked before the
    fields: a newer payload may well fail them, and must be told apart from a broken
    one), else pydantic's ValidationError for anything that is not a payload.
    """
    if isinstance(raw, dict):
        version = raw.get("version", OLDEST_PAYLOAD_VERSION)
        if type(version) is int and version > PAYLOAD_VERSION:
            raise PayloadVersionError(version)
        raw = {**raw, "version": version}
    payload = SubtaskPayload.model_validate(raw)
    return payload.model_copy(update={"version": PAYLOAD_VERSION})


class OutcomeError(_Strict):
    category: str
    message: str


class SubtaskOutcome(_Strict):
    """What a subtask records and returns: always data, never an exception."""

    subtask_id: str
    worker_type: str
    status: OutcomeStatus
    error: OutcomeError | None = None
    model: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 1
    cached: bool = False
    # How many subtasks shared the model call (0: it had a call of its own).
    batch_size: int = 0
    # How long it waited for its model's rate window to open.
    rate_waited_s: float = 0.0
    critical: bool = False
    # Set when another model than the tier's first served: which one it was, and why.
    routed_from: str | None = None
    route_reason: str | None = None
    output: dict[str, Any] | None = None


class JobResult(_Strict):
    """What a caller gets back for a job, at any point of its life."""

    job_id: str
    kind: str
    tenant: str
    status: JobStatus
    completeness: float = Field(ge=0, le=1)
    result: dict[str, Any] | None = None
    cost_usd: float = 0.0
    subtasks: list[SubtaskOutcome] = Field(default_factory=list)
    version: int = 0
    created_at: float = 0.0
    finished_at: float | None = None
    deadline_at: float = 0.0
    # A supervised job's actions waiting for a reviewer (fleetline approve / reject).
    waiting_for: list[str] = Field(default_factory=list)
