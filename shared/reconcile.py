"""The ledger against a provider's invoice: what was billed, what was charged, and where
they differ.

An invoice is JSON lines, one per answered provider call (the sim writes one with
`FLEETLINE_SIM_INVOICE`; a provider's usage export can be put in the same shape):
`model`, `tokens_in`, `tokens_out`, `call_id`, `job_id`, `tenant`, and `batch` (items of
a batched call, 0 for a single one; a batch's `call_id` and `job_id` are lists, one per
item in order). A line is billed at the model's row of the price table; the ledger
charged each call id once (its record's `actual_usd`), and a batch line is compared with
the sum of its items' charges.

Differences: `uncharged` (a billed call with no settled record), `amount` (charged and
billed differ by more than the ledger's rounding: 1e-9 USD per record, each record being
kept in whole nano-USD) and `unbilled` (a settled record of one of the invoice's jobs that
no line bills). Pure: the ledger records come from a loader, so this runs without Redis.
A call record lives minutes (until no redelivery can come); once it is gone the loader
reads the call from what its job's spend counter keeps of it (state, charge, tenant) for
as long as the job's records live, so a job is reconciled for its whole TTL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    NonNegativeInt,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from fleetline.shared.ledger import CallRecord
from fleetline.shared.models.prices import call_cost_usd
from fleetline.shared.settings import ModelSpec

# The most a settled record may differ from what it billed: the ledger keeps whole nano-USD.
TOLERANCE_USD = 1e-9

DifferenceKind = Literal["uncharged", "amount", "unbilled"]
# (call ids, job ids) -> every record that exists of those call ids, and every record of
# those jobs, by call id.
RecordLoader = Callable[[Sequence[str], Sequence[str]], Mapping[str, CallRecord]]


class InvoiceError(ValueError):
    """The invoice cannot be read, or a line of it is not a bill (names the line)."""


class InvoiceLine(BaseModel):
    """One billed provider call; a batch's ids are lists in item order."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    model: StrictStr
    tokens_in: NonNegativeInt
    tokens_out: NonNegativeInt
    call_id: StrictStr | list[StrictStr]
    job_id: StrictStr | list[StrictStr]
    tenant: StrictStr = ""
    worker_type: StrictStr = ""
    attempt: StrictInt = 1
    correction: StrictBool = False
    batch: NonNegativeInt = 0

    @model_validator(mode="after")
    def _shape(self) -> InvoiceLine:
        if self.batch == 0:
            if not isinstance(self.call_id, str) or not isinstance(self.job_id, str):
                raise ValueError("a single call (batch 0) has one call_id and one job_id")
        else:
            if not isinstance(self.call_id, list) or not isinstance(self.job_id, list):
                raise ValueError("a batch has a list of call ids and a list of job ids")
            if len(self.call_id) != self.batch or len(self.job_id) != self.batch:
                raise ValueError(f"a batch of {self.batch} needs {self.batch} call and job ids")
        if not all(self.call_ids):
            raise ValueError("a call id is empty")
        return self

    @property
    def call_ids(self) -> tuple[str, ...]:
        return tuple(self.call_id) if isinstance(self.call_id, list) else (self.call_id,)

    @property
    def job_ids(self) -> tuple[str, ...]:
        return tuple(self.job_id) if isinstance(self.job_id, list) else (self.job_id,)


def parse_invoice(lines: Iterable[str]) -> list[InvoiceLine]:
    """The invoice's lines (blank lines skipped), or InvoiceError naming the first bad one."""
    parsed = []
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            parsed.append(InvoiceLine.model_validate(json.loads(text)))
        except json.JSONDecodeError as exc:
            raise InvoiceError(f"line {number}: not JSON ({exc.msg})") from None
        except ValidationError as exc:
            reasons = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'line'}: {e['msg']}"
                for e in exc.errors()[:3]
            )
            raise InvoiceError(f"line {number}: {reasons}") from None
    return parsed


@dataclass
class Totals:
    billed_usd: float = 0.0
    charged_usd: float = 0.0


@dataclass(frozen=True)
class Difference:
    """Where the ledger and the invoice disagree. A batch line's `amount` difference names
    all its items (call_id and job_id are then lists, as on the invoice)."""

    call_id: str | list[str]
    job_id: str | list[str]
    kind: DifferenceKind
    billed_usd: float
    charged_usd: float


@dataclass
class Reconciliation:
    """Calls and USD billed (invoice lines) and charged (settled ledger records)."""

    billed_calls: int = 0
    charged_calls: int = 0
    billed_usd: float = 0.0
    charged_usd: float = 0.0
    by_job: dict[str, Totals] = field(default_factory=dict)
    by_tenant: dict[str, Totals] = field(default_factory=dict)
    differences: list[Difference] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return not self.differences

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def _add(self, job: str, tenant: str, billed: float = 0.0, charged: float = 0.0) -> None:
        for table, name in ((self.by_job, job), (self.by_tenant, tenant)):
            totals = table.setdefault(name, Totals())
            totals.billed_usd += billed
            totals.charged_usd += charged


def reconcile(
    lines: Sequence[InvoiceLine], models: Mapping[str, ModelSpec], load: RecordLoader
) -> Reconciliation:
    """Compare the invoice with the ledger records `load` returns (see RecordLoader).

    Lines that share a call id (a call billed twice, a batch item billed again alone) are
    compared together with the charges of their call ids. Raises InvoiceError for a line
    whose model has no price.
    """
    costs = [_cost(n, line, models) for n, line in enumerate(lines, 1)]
    call_ids = list(dict.fromkeys(c for line in lines for c in line.call_ids))
    jobs = list(dict.fromkeys(j for line in lines for j in line.job_ids if j))
    records = load(call_ids, jobs)
    out = Reconciliation(billed_calls=len(lines))
    charged_nano = 0

    for group in _groups(lines):
        ids: dict[str, tuple[str, str]] = {}  # call id -> (job, tenant) as billed
        for i in group:
            for call_id, job in zip(lines[i].call_ids, lines[i].job_ids, strict=True):
                ids.setdefault(call_id, (job, lines[i].tenant))
        billed = sum(costs[i] for i in group)
        found = {c: r for c in ids if (r := records.get(c)) is not None and r.settled}
        charged = sum(r.actual_usd for r in found.values())
        unsettled = [c for c in ids if c not in found]
        charged_nano += sum(_nano(r.actual_usd) for r in found.values())
        out.charged_calls += len(found)

        shares = _shares(billed, [found[c].actual_usd if c in found else None for c in ids])
        for (call_id, (job, tenant)), share in zip(ids.items(), shares, strict=True):
            record = found.get(call_id)
            billed_tenant = tenant or (record.tenant if record else "")
            out._add(job, billed_tenant, billed=share)
            if record is None:
                out.differences.append(Difference(call_id, job, "uncharged", share, 0.0))
            else:
                # Charged to the job and tenant the ledger reserved it against.
                _charge(out, record.job_id or job, record.tenant or billed_tenant, record)
        if not unsettled and abs(billed - charged) > TOLERANCE_USD * max(1, len(found)):
            names = list(ids)
            jobs_of = [ids[c][0] for c in names]
            one = len(names) == 1
            out.differences.append(
                Difference(
                    names[0] if one else names,
                    jobs_of[0] if one else jobs_of,
                    "amount",
                    billed,
                    charged,
                )
            )

    billed_ids = set(call_ids)
    for call_id in sorted(records):
        record = records[call_id]
        if call_id in billed_ids or not record.settled:
            continue
        out.charged_calls += 1
        charged_nano += _nano(record.actual_usd)
        _charge(out, record.job_id, record.tenant, record)
        out.differences.append(
            Difference(call_id, record.job_id, "unbilled", 0.0, record.actual_usd)
        )

    out.billed_usd = sum(costs)
    out.charged_usd = charged_nano / 1e9
    out.by_job = dict(sorted(out.by_job.items()))
    out.by_tenant = dict(sorted(out.by_tenant.items()))
    return out


def _charge(out: Reconciliation, job: str, tenant: str, record: CallRecord) -> None:
    out._add(job, tenant, charged=record.actual_usd)


def _nano(usd: float) -> int:
    return round(usd * 1e9)


def _cost(number: int, line: InvoiceLine, models: Mapping[str, ModelSpec]) -> float:
    spec = models.get(line.model)
    if spec is None:
        raise InvoiceError(f"line {number}: model {line.model!r} has no price (FLEETLINE_MODELS)")
    return call_cost_usd(spec, line.tokens_in, line.tokens_out)


def _groups(lines: Sequence[InvoiceLine]) -> list[list[int]]:
    """The lines, grouped where they share a call id (in the order of their first line)."""
    parent = list(range(len(lines)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, line in enumerate(lines):
        for call_id in line.call_ids:
            j = first.setdefault(call_id, i)
            parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(lines)):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def _shares(billed: float, charged: list[float | None]) -> list[float]:
    """A group's bill split over its call ids: by what each was charged, and what the
    charges leave of it evenly over the uncharged ones (the invoice itemises no batch)."""
    paid = sum(c for c in charged if c is not None)
    unpaid = sum(c is None for c in charged)
    if not unpaid:
        if paid <= 0:
            return [billed / len(charged)] * len(charged)
        return [billed * (c or 0.0) / paid for c in charged]
    scale = min(1.0, billed / paid) if paid > 0 else 0.0
    rest = (billed - paid * scale) / unpaid
    return [rest if c is None else c * scale for c in charged]
