"""Fleetline: your agents, tools and job kinds on a Celery + Redis worker fleet.

    from fleetline import Fleet, Plan, fan_out

    fleet = Fleet("acme")
    sentiment = fleet.agent("sentiment", tier="cheap", output=Sentiment,
                            prompt="Classify the sentiment of the text. {goal}")

    @fleet.job("review_digest", input=ReviewInput)
    def review_digest(inp: ReviewInput) -> Plan:
        ...

Run it with `FLEETLINE_APP=acme:fleet fleetline up`; submit with `fleet.submit(spec)` or
`fleetline submit --app acme:fleet spec.json`.

This is the root package (its files live in the repository's `producer/root/`); the
repository's folders are mapped under it as `fleetline.producer`, `fleetline.workers`,
`fleetline.shared` and `fleetline.beat`.
"""

from fleetline.fleet import Fleet
from fleetline.producer.client import ApiError, AsyncClient, Client
from fleetline.producer.handle import JobHandle
from fleetline.shared.action_policies import (
    ActionContext,
    AllowedHosts,
    AmountLimit,
    Match,
    PiiCheck,
    Rule,
)
from fleetline.shared.errors import (
    ConfigError,
    FleetlineError,
    JobNotFound,
    KillSwitchTripped,
    PermanentToolError,
    RetryableToolError,
    SpecError,
    StoreUnavailable,
    WaitTimeout,
)
from fleetline.shared.fleet import (
    Agent,
    JobKind,
    Plan,
    PlanError,
    Stage,
    Step,
    Tool,
    debate,
    fan_out,
    lexical_agree,
    pipeline,
    stage,
    supervised,
)
from fleetline.shared.schemas import JobResult, JobSpec, JobStatus, OutcomeStatus, SubtaskOutcome
from fleetline.shared.webhooks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign_webhook,
    verify_webhook,
)

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "ActionContext",
    "Agent",
    "AllowedHosts",
    "AmountLimit",
    "ApiError",
    "AsyncClient",
    "Client",
    "ConfigError",
    "Fleet",
    "FleetlineError",
    "JobHandle",
    "JobKind",
    "JobNotFound",
    "JobResult",
    "JobSpec",
    "JobStatus",
    "KillSwitchTripped",
    "Match",
    "OutcomeStatus",
    "PermanentToolError",
    "PiiCheck",
    "Plan",
    "PlanError",
    "RetryableToolError",
    "Rule",
    "SpecError",
    "Stage",
    "Step",
    "StoreUnavailable",
    "SubtaskOutcome",
    "Tool",
    "WaitTimeout",
    "debate",
    "fan_out",
    "lexical_agree",
    "pipeline",
    "sign_webhook",
    "stage",
    "supervised",
    "verify_webhook",
]
