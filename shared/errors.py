"""Fleetline's exceptions.

    FleetlineError
    ├── ConfigError                 invalid settings at start-up
    ├── SpecError                   a job spec refused at the edge (field path + reason)
    ├── AdmissionError              a valid spec refused by policy
    │   └── KillSwitchTripped       a spend kill switch is on
    ├── JobNotFound                 no job record with that id
    ├── WaitTimeout                 a job was still running when a wait gave up
    ├── ConcurrencyError            a compare-and-set lost to another writer
    ├── NotResumable                a pipeline job that cannot run again (the reason)
    ├── StoreUnavailable            Redis did not answer in time
    └── StepError                   a step's call failed: a model's or a tool's
        ├── RetryableStepError      worth another attempt
        │   ├── RetryableModelError
        │   │   ├── RateLimited     429, with the provider's Retry-After
        │   │   ├── ProviderServerError 5xx
        │   │   ├── ModelTimeout    the call ran out of time
        │   │   └── ModelConnectionError
        │   └── RetryableToolError  a tool raised one of its `retry_on` types, or this
        │       └── ToolTimeout     a tool ran past its timeout
        └── PermanentStepError      retrying cannot help
            ├── PermanentModelError
            │   ├── ModelAuthError  401/403
            │   └── ModelBadRequest other 4xx
            └── PermanentToolError  a tool raised anything else, or this

ModelError is the base of the model errors on both sides.

Messages default to the class docstring.
"""

from __future__ import annotations


class FleetlineError(Exception):
    """Fleetline failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigError(FleetlineError):
    """The settings are invalid."""


class SpecError(FleetlineError):
    """The job spec is invalid."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        self.errors = errors
        detail = "; ".join(f"{field}: {reason}" for field, reason in errors)
        super().__init__(f"invalid job spec: {detail}")


class AdmissionError(FleetlineError):
    """The job was refused."""


class KillSwitchTripped(AdmissionError):
    """A spend kill switch is tripped; `resets_at` (Unix time) is when its window ends."""

    def __init__(self, message: str, resets_at: float | None = None) -> None:
        super().__init__(message)
        self.resets_at = resets_at


class NotResumable(FleetlineError):
    """The job cannot be resumed."""


class IdempotencyConflict(SpecError):
    """An idempotency key already names a job with another spec."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__([("idempotency_key", f"already used by job {job_id} for another spec")])


class JobNotFound(FleetlineError):
    """No such job."""


class WaitTimeout(FleetlineError, TimeoutError):
    """The job is still running."""


class ConcurrencyError(FleetlineError):
    """The record changed since it was read."""


class StoreUnavailable(FleetlineError):
    """Redis is unavailable."""


class StepError(FleetlineError):
    """The step's call failed."""

    category = "internal"
    retry_after_s: float | None = None


class RetryableStepError(StepError):
    """The step's call failed; another attempt may succeed."""


class PermanentStepError(StepError):
    """The step's call failed and retrying cannot help."""

    category = "permanent"


class ModelError(StepError):
    """The model call failed."""

    category = "model_error"


class RetryableModelError(ModelError, RetryableStepError):
    """The model call failed; another attempt may succeed."""


class RateLimited(RetryableModelError):
    """The provider rate-limited the call."""

    category = "rate_limited"

    def __init__(self, message: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ProviderServerError(RetryableModelError):
    """The provider answered with a server error."""

    category = "server_error"


class ModelTimeout(RetryableModelError):
    """The model call timed out."""

    category = "timeout"


class ModelConnectionError(RetryableModelError):
    """The provider could not be reached."""

    category = "connection_error"


class PermanentModelError(ModelError, PermanentStepError):
    """The model call failed and retrying cannot help."""

    category = "permanent"


class ModelAuthError(PermanentModelError):
    """The provider refused the credentials."""

    category = "auth"


class ModelBadRequest(PermanentModelError):
    """The provider refused the request."""

    category = "bad_request"


class RetryableToolError(RetryableStepError):
    """The tool failed; another attempt may succeed. Raise it from a tool to retry."""

    category = "tool_error"


class ToolTimeout(RetryableToolError):
    """The tool ran past its timeout."""

    category = "timeout"


class PermanentToolError(PermanentStepError):
    """The tool failed and retrying cannot help. Raise it from a tool to fail the step."""

    category = "tool_error"
