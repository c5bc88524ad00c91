"""Micro-batching: concurrent calls of one worker type, model, tenant and instruction share
a call.

Subtasks of a batchable worker type that arrive together in one worker process (a thread
or gevent pool keeps many in flight) join a batch of their tenant's calls (of every
tenant's only when `FLEETLINE_CACHE_SHARED=true` says tenants may see each other's data:
a batch's documents share one prompt): the first one in leads, gathers its
peers until the batch is full, `max_wait` has passed, or no peer arrived for `idle`, and
makes one model call for all of them. Each item gets its own validated output and its
share of the tokens and cost (the shares add up to the call, and none passes the item's
own bound). A batch whose call fails, or an item whose answer does not validate, falls
back to a single call of its own; a batch answer that does not parse is still charged,
each item its share.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from fleetline.shared.models.base import ModelClient, ModelRequest, render_messages
from fleetline.shared.models.prices import call_cost_usd, input_token_bound
from fleetline.shared.settings import ModelSpec
from fleetline.workers.gate import GateResult, validation_errors


@dataclass
class _Item:
    request: ModelRequest
    done: threading.Event = field(default_factory=threading.Event)
    result: GateResult | None = None
    batch_size: int = 0


# A batch group: (tenant, or None when tenants share; instruction).
_Key = tuple[str | None, str]


@dataclass
class _Group:
    pending: list[_Item] = field(default_factory=list)
    led: bool = False


def split_capped(total: int, weights: list[int], caps: list[int]) -> list[int]:
    """`total` split in proportion to `weights`, no share above its cap (the excess goes to
    the shares with room), in whole units; it adds up to `total` while the caps allow."""
    shares = [0] * len(weights)
    open_ = [i for i in range(len(weights)) if caps[i] > 0]
    left = total
    while left > 0 and open_:
        part = split(left, [weights[i] for i in open_])
        left = 0
        for i, p in zip(open_, part, strict=True):
            give = min(p, caps[i] - shares[i])
            shares[i] += give
            left += p - give
        open_ = [i for i in open_ if shares[i] < caps[i]]
    # Past every cap (a provider reported more than the bounds): the rest by weight.
    return [s + e for s, e in zip(shares, split(left, weights), strict=True)] if left else shares


def split(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights` (equally when all are 0), in whole units
    that add up to `total`."""
    if not weights:
        return []
    if not any(weights):
        weights = [1] * len(weights)
    weight_sum = sum(weights)
    raw = [total * w / weight_sum for w in weights]
    shares = [int(r) for r in raw]
    # Largest remainders get the units that rounding down left over.
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - shares[i], reverse=True)[
        : total - sum(shares)
    ]:
        shares[i] += 1
    return shares


# How much longer than its own timeout a follower waits for its leader's call.
FOLLOWER_GRACE_S = 2.0


class Batcher:
    """Batches the calls of one (worker type, model) in one process.

    `shared_tenants`: calls of different tenants may share a batch (the cache's `shared`
    setting); off, every batch holds one tenant's calls only.
    """

    def __init__(
        self,
        client: ModelClient,
        schema: type[BaseModel],
        price: ModelSpec,
        max_size: int,
        max_wait_s: float,
        idle_s: float,
        *,
        shared_tenants: bool = False,
    ) -> None:
        self._client = client
        self._schema = schema
        self._price = price
        self._max_size = max_size
        self._max_wait_s = max_wait_s
        self._idle_s = idle_s
        self._shared_tenants = shared_tenants
        self._lock = threading.Lock()
        self._groups: dict[_Key, _Group] = {}

    def key(self, request: ModelRequest) -> _Key:
        """The group a request batches in: its tenant's (unless tenants share) and
        instruction's."""
        return (None if self._shared_tenants else request.tenant, request.instruction)

    def call(self, request: ModelRequest) -> tuple[GateResult | None, int]:
        """This request's share of a batched call, and the batch's size (0: not batched).

        None means: make a single call (alone in its batch, or the batch failed); a
        result without output carries the usage of an item whose answer did not validate.
        """
        item = _Item(request)
        key = self.key(request)
        with self._lock:
            group = self._groups.setdefault(key, _Group())
            group.pending.append(item)
            lead = not group.led
            group.led = True
        if lead:
            self._lead(key)
        # The leader's call is bounded by the smallest timeout of the batch; the grace
        # lets a follower take its share (and its bill) rather than call again.
        elif not item.done.wait(timeout=request.timeout_s + FOLLOWER_GRACE_S):
            return None, 0
        return item.result, item.batch_size

    def _lead(self, key: _Key) -> None:
        """Gather a batch of `key`'s group, run it, and hand every item its result."""
        started = last_change = time.monotonic()
        seen = 0
        while True:
            with self._lock:
                count = len(self._groups[key].pending)
            now = time.monotonic()
            if count != seen:
                seen, last_change = count, now
            if (
                count >= self._max_size
                or now - started >= self._max_wait_s
                or now - last_change >= self._idle_s
            ):
                break
            time.sleep(self._idle_s / 3)
        with self._lock:
            group = self._groups[key]
            items, group.pending = group.pending[: self._max_size], group.pending[self._max_size :]
            if not group.pending:
                del self._groups[key]
        if group.pending:
            # More than one batch arrived at once: the rest get a leader of their own.
            threading.Thread(target=self._lead, args=(key,), daemon=True).start()
        results = self._run(items) if len(items) > 1 else [None]
        for item, result in zip(items, results, strict=True):
            item.result = result
            item.batch_size = len(items) if len(items) > 1 else 0
            item.done.set()

    def _run(self, items: list[_Item]) -> list[GateResult | None]:
        first = items[0].request
        tenants = {i.request.tenant for i in items}
        jobs = {i.request.job_id for i in items}
        request = first.model_copy(
            update={
                "batch": tuple(i.request.document for i in items),
                "document": "",
                "max_output_tokens": sum(i.request.max_output_tokens for i in items),
                "timeout_s": min(i.request.timeout_s for i in items),
                "call_id": f"batch:{first.call_id}+{len(items) - 1}",
                "batch_call_ids": tuple(i.request.call_id for i in items),
                "batch_job_ids": tuple(i.request.job_id for i in items),
                # Whose call it is, when it is one tenant's (one job's); the items say the rest.
                "tenant": first.tenant if len(tenants) == 1 else "",
                "job_id": first.job_id if len(jobs) == 1 else "",
            }
        )
        try:
            response = self._client.complete(request)
        except Exception:
            return [None] * len(items)  # not answered: nothing was billed
        answers: list[Any] = []
        unparsed = ""
        try:
            found = json.loads(response.text)["items"]
            if not isinstance(found, list) or len(found) != len(items):
                raise ValueError("the batch answer does not have one item per document")
            answers = found
        except (ValueError, TypeError, KeyError) as exc:
            # Billed all the same: every item pays its share, then calls on its own.
            unparsed = f"the batch answer did not parse: {exc}"[:300]
        # Shares in proportion to each item's own bounds, never above them: an item is
        # charged at most what its hold allows.
        bounds_in = [input_token_bound(*render_messages(i.request)) for i in items]
        caps_out = [i.request.max_output_tokens for i in items]
        tokens_in = split_capped(response.tokens_in, bounds_in, bounds_in)
        weights_out = [len(json.dumps(a)) for a in answers] if answers else caps_out
        tokens_out = split_capped(response.tokens_out, weights_out, caps_out)
        results: list[GateResult | None] = []
        for n, (t_in, t_out) in enumerate(zip(tokens_in, tokens_out, strict=True)):
            result = GateResult(
                calls=1,
                tokens_in=t_in,
                tokens_out=t_out,
                cost_usd=call_cost_usd(self._price, t_in, t_out),
                models=[first.model],
                errors=unparsed,
            )
            if answers:
                try:
                    output = self._schema.model_validate(answers[n])
                    result.output = output.model_dump(mode="json")
                except ValidationError as exc:
                    result.errors = validation_errors(exc)
            results.append(result)
        return results
