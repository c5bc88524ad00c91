"""Fleet-wide circuit breakers, one per (agent, model), named `extraction:sim-small`, and one
per tool, named `lookup:tool`.

A breaker opens when, over a sliding window (`window_s`, in `buckets` steps), at least
`min_calls` results were recorded and `failure_rate` of them were failures. It stays open
for `reset_timeout_s`, then is half-open: the first caller of the fleet gets the probe
lease (SET NX PX `probe_timeout_s`) and makes the one trial call while every other caller
is rejected. The probe's success closes the breaker and empties its window; its failure
opens it again for a fresh reset timeout; a probe whose process died frees the lease when
it expires. When Redis does not answer within `socket_timeout_s`, `on_redis_down` decides:
fail_open allows the call (and logs), fail_closed rejects it.

    breakers = RedisBreakers(breaker_redis(url, BreakerSettings()))
    permit = breakers.allow("extraction:sim-small")      # Permit(state, allowed, is_probe)
    ... call the model if permit.allowed ...
    breakers.record_failure("extraction:sim-small", permit)   # the caller decides

    FleetBreaker(breakers, "extraction:sim-small", exclude=[ModelBadRequest]).call(f)

Hot path: `queue_allow` / `parse_allow` and `queue_record` / `parse_record` put the same
scripts on a caller's pipeline, beside the other guards' commands.
"""

from fleetline.shared.breakers.breaker import FleetBreaker
from fleetline.shared.breakers.memory_store import MemoryBreakers
from fleetline.shared.breakers.model import (
    BreakerOpen,
    Breakers,
    BreakerSnapshot,
    BreakerState,
    Permit,
    Recorded,
    Result,
    Transition,
    breaker_name,
    check_name,
)
from fleetline.shared.breakers.redis_store import RedisBreakers, breaker_redis
from fleetline.shared.breakers.settings import BreakerSettings, RedisDownPolicy

__all__ = [
    "BreakerOpen",
    "BreakerSettings",
    "BreakerSnapshot",
    "BreakerState",
    "Breakers",
    "FleetBreaker",
    "MemoryBreakers",
    "Permit",
    "Recorded",
    "RedisBreakers",
    "RedisDownPolicy",
    "Result",
    "Transition",
    "breaker_name",
    "breaker_redis",
    "check_name",
]
