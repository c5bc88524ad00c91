"""Micro-batching: concurrent calls of one worker type, model and instruction share a call.

Subtasks of a batchable worker type that arrive together in one worker process (a thread
or gevent pool keeps many in flight) join a batch: the first one in leads, gathers its
peers until the batch is full, `max_wait` has passed, or no peer arrived for `idle`, and
makes one model call for all of them. Each item gets its own validated output and its
share of the tokens and cost (the shares add up to the call). A batch whose call fails,
or an item whose answer does not validate, falls back to a single call of its own.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

from pydantic import BaseModel, ValidationError

from fleetline.shared.models.base import ModelClient, ModelRequest
from fleetline.shared.models.prices import call_cost_usd
from fleetline.shared.settings import ModelSpec
from fleetline.workers.gate import GateResult, validation_errors


@dataclass
class _Item:
    request: ModelRequest
    done: threading.Event = field(default_factory=threading.Event)
    result: GateResult | None = None
    batch_size: int = 0


@dataclass
class _Group:
    pending: list[_Item] = field(default_factory=list)
    led: bool = False


def split(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights`, in whole units that add up to `total`."""
    weight_sum = sum(weights) or len(weights)
    raw = [total * (w or (weight_sum == len(weights))) / weight_sum for w in weights]
    shares = [int(r) for r in raw]
    # Largest remainders get the units that rounding down left over.
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - shares[i], reverse=True)[
        : total - sum(shares)
    ]:
        shares[i] += 1
    return shares


class Batcher:
    """Batches the calls of one (worker type, model) in one process."""

    def __init__(
        self,
        client: ModelClient,
        schema: type[BaseModel],
        price: ModelSpec,
        max_size: int,
        max_wait_s: float,
        idle_s: float,
    ) -> None:
        self._client = client
        self._schema = schema
        self._price = price
        self._max_size = max_size
        self._max_wait_s = max_wait_s
        self._idle_s = idle_s
        self._lock = threading.Lock()
        self._groups: dict[str, _Group] = {}

    def call(self, request: ModelRequest) -> tuple[GateResult | None, int]:
        """This request's share of a batched call, and the batch's size (0: not batched).

        None means: make a single call (alone in its batch, or the batch failed); a
        result without output carries the usage of an item whose answer did not validate.
        """
        item = _Item(request)
        with self._lock:
            group = self._groups.setdefault(request.instruction, _Group())
            group.pending.append(item)
            lead = not group.led
            group.led = True
        if lead:
            self._lead(request.instruction)
        elif not item.done.wait(timeout=request.timeout_s):
            return None, 0
        return item.result, item.batch_size

    def _lead(self, key: str) -> None:
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
        request = first.model_copy(
            update={
                "batch": tuple(i.request.document for i in items),
                "document": "",
                "max_output_tokens": sum(i.request.max_output_tokens for i in items),
                "timeout_s": min(i.request.timeout_s for i in items),
                "call_id": f"batch:{first.call_id}+{len(items) - 1}",
                "batch_call_ids": tuple(i.request.call_id for i in items),
                "batch_job_ids": tuple(i.request.job_id for i in items),
            }
        )
        try:
            response = self._client.complete(request)
            answers = json.loads(response.text)["items"]
            if not isinstance(answers, list) or len(answers) != len(items):
                raise ValueError("the batch answer does not have one item per document")
        except Exception:
            return [None] * len(items)
        tokens_in = split(response.tokens_in, [len(i.request.document) for i in items])
        tokens_out = split(response.tokens_out, [len(json.dumps(a)) for a in answers])
        results: list[GateResult | None] = []
        for answer, t_in, t_out in zip(answers, tokens_in, tokens_out, strict=True):
            result = GateResult(
                calls=1,
                tokens_in=t_in,
                tokens_out=t_out,
                cost_usd=call_cost_usd(self._price, t_in, t_out),
                models=[first.model],
            )
            try:
                result.output = self._schema.model_validate(answer).model_dump(mode="json")
            except ValidationError as exc:
                result.errors = validation_errors(exc)
            results.append(result)
        return results
