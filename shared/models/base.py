"""The model-client interface every provider implements.

A client makes exactly one attempt: retries belong to Celery (one retry layer), so SDK
retries are off and failures surface as the `shared.errors.ModelError` subclasses.
"""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, SkipValidation


class ModelRequest(BaseModel):
    """One call to one model; `instruction` and `document` are kept apart so `sim` can work."""

    model_config = ConfigDict(frozen=True)

    model: str  # our key in the price table
    api_model: str  # the provider's id for it
    # The agent the call is for (the sim's answers and fault injection go by it).
    worker_type: str
    instruction: str
    document: str
    max_output_tokens: int = Field(gt=0)
    timeout_s: float = Field(gt=0)
    # Validation errors of the previous answer, sent back for a corrected one.
    correction: str | None = None
    # Identifies the call for deterministic simulation and idempotent accounting.
    call_id: str = ""
    attempt: int = 1
    # Whose call it is: the job and its tenant (a provider bills them; batches never mix
    # tenants).
    job_id: str = ""
    tenant: str = ""
    # Several documents answered in one call: the answer is {"items": [one per document]}.
    batch: tuple[str, ...] = ()
    # A batch's items by call id and job id, in the order of `batch`.
    batch_call_ids: tuple[str, ...] = ()
    batch_job_ids: tuple[str, ...] = ()
    # The JSON schema of the agent's output model (built once per agent; not copied).
    output_schema: Annotated[dict[str, Any] | None, SkipValidation] = None


class ModelResponse(BaseModel):
    """What came back: the text and the provider-reported usage."""

    model_config = ConfigDict(frozen=True)

    text: str
    model: str
    tokens_in: int = Field(ge=0)
    tokens_out: int = Field(ge=0)
    latency_ms: float = Field(ge=0)


class ModelClient(Protocol):
    """A provider adapter. Raises a `ModelError` subclass on failure; never retries."""

    def complete(self, request: ModelRequest) -> ModelResponse: ...


SYSTEM_PROMPT = (
    "You are a specialist agent of a multi-agent fleet. Answer with one JSON object "
    "that matches the schema named in the instruction, and nothing else."
)


def render_messages(request: ModelRequest) -> tuple[str, str]:
    """The (system, user) pair every chat provider is sent for a request."""
    if request.batch:
        documents = "\n".join(
            f'<document n="{n}">\n{doc}\n</document>' for n, doc in enumerate(request.batch, 1)
        )
        user = (
            f"{request.instruction}\n\nAnswer for each of the {len(request.batch)} documents "
            'below, in order, as {"items": [one answer object per document]}.\n\n' + documents
        )
    else:
        user = f"{request.instruction}\n\n<document>\n{request.document}\n</document>"
    if request.correction:
        user += (
            "\n\nYour previous answer was rejected by the output validator:\n"
            f"{request.correction}\nAnswer again with corrected JSON only."
        )
    return SYSTEM_PROMPT, user
