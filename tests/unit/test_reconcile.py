"""Reconciling the ledger with an invoice, without Redis: records come from a dict."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from fleetline.shared.ledger import NANO, CallRecord, parse_call_record
from fleetline.shared.models.prices import call_cost_usd
from fleetline.shared.reconcile import InvoiceError, parse_invoice, reconcile
from fleetline.shared.settings import ModelSpec

MODELS = {
    "sim-small": ModelSpec(provider="sim", input_usd_per_mtok=0.15, output_usd_per_mtok=0.60),
    "sim-large": ModelSpec(provider="sim", input_usd_per_mtok=3.0, output_usd_per_mtok=15.0),
    # Half a nano-USD a token: each record's charge is rounded to whole nano-USD.
    "odd": ModelSpec(provider="sim", input_usd_per_mtok=0.0005, output_usd_per_mtok=0.0015),
}


def line(call_id: str | list[str], tokens_in: int = 1000, tokens_out: int = 200, **kw: Any) -> str:
    batch = len(call_id) if isinstance(call_id, list) else 0
    job: str | list[str] = (
        [c.split(":")[0] for c in call_id] if isinstance(call_id, list) else call_id.split(":")[0]
    )
    fields = {
        "model": "sim-small",
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "call_id": call_id,
        "job_id": job,
        "tenant": "acme",
        "worker_type": "extraction",
        "attempt": 1,
        "correction": False,
        "batch": batch,
        **kw,
    }
    return json.dumps(fields)


def cost(tokens_in: int = 1000, tokens_out: int = 200, model: str = "sim-small") -> float:
    return call_cost_usd(MODELS[model], tokens_in, tokens_out)


def settled(call_id: str, usd: float, tenant: str = "acme", state: str = "settled") -> CallRecord:
    # As the ledger keeps it: whole nano-USD.
    job = call_id.split(":", maxsplit=1)[0]
    return CallRecord(
        call_id, state, actual_usd=round(usd * NANO) / NANO, job_id=job, tenant=tenant
    )


class Records:
    """A ledger stand-in: records by call id; a job's records are those under `<job>:`."""

    def __init__(self, *records: CallRecord) -> None:
        self.records = {r.call_id: r for r in records}
        self.asked: list[tuple[list[str], list[str]]] = []

    def __call__(self, call_ids: Sequence[str], jobs: Sequence[str]) -> Mapping[str, CallRecord]:
        self.asked.append((list(call_ids), list(jobs)))
        return {
            c: r
            for c, r in self.records.items()
            if c in call_ids or any(c.startswith(f"{j}:") for j in jobs)
        }


def run(lines: list[str], records: Records) -> Any:
    return reconcile(parse_invoice(lines), MODELS, records)


def test_an_invoice_the_ledger_charged_exactly_agrees() -> None:
    lines = [line("j1:s1:1:sim-small"), line("j1:s2:1:sim-small", 500, 50), line("j2:s1:1:x")]
    records = Records(
        settled("j1:s1:1:sim-small", cost()),
        settled("j1:s2:1:sim-small", cost(500, 50)),
        settled("j2:s1:1:x", cost(), tenant="beta"),
        # Another job's record is not the invoice's business.
        settled("j9:s1:1:sim-small", 1.0),
    )
    result = run(lines, records)
    assert result.agrees and result.differences == []
    assert (result.billed_calls, result.charged_calls) == (3, 3)
    assert result.billed_usd == pytest.approx(2 * cost() + cost(500, 50))
    assert result.charged_usd == pytest.approx(result.billed_usd, abs=1e-12)
    assert result.by_job["j1"].billed_usd == pytest.approx(cost() + cost(500, 50))
    assert result.by_job["j1"].charged_usd == pytest.approx(cost() + cost(500, 50))
    # Billed to the invoice's tenant, charged to the one the ledger reserved against.
    assert result.by_tenant["acme"].billed_usd == pytest.approx(2 * cost() + cost(500, 50))
    assert result.by_tenant["beta"].charged_usd == pytest.approx(cost())
    assert records.asked == [
        (["j1:s1:1:sim-small", "j1:s2:1:sim-small", "j2:s1:1:x"], ["j1", "j2"])
    ]
    data = result.to_json()
    assert set(data) == {
        "billed_calls",
        "charged_calls",
        "billed_usd",
        "charged_usd",
        "by_job",
        "by_tenant",
        "differences",
    }
    assert data["by_job"]["j2"] == {"billed_usd": cost(), "charged_usd": pytest.approx(cost())}


def test_a_billed_call_without_a_settled_record_is_uncharged() -> None:
    lines = [line("j1:s1:1:sim-small"), line("j1:s2:1:sim-small"), line("j1:s3:1:sim-small")]
    records = Records(
        settled("j1:s1:1:sim-small", cost()),
        settled("j1:s2:1:sim-small", cost(), state="expired"),  # its worker died
    )
    result = run(lines, records)
    assert not result.agrees
    assert [(d.call_id, d.job_id, d.kind) for d in result.differences] == [
        ("j1:s2:1:sim-small", "j1", "uncharged"),
        ("j1:s3:1:sim-small", "j1", "uncharged"),
    ]
    assert all(d.billed_usd == cost() and d.charged_usd == 0 for d in result.differences)
    assert result.charged_calls == 1
    assert result.by_job["j1"].charged_usd == pytest.approx(cost())


def test_a_charge_that_differs_from_the_bill_is_an_amount_difference() -> None:
    lines = [line("j1:s1:1:sim-small"), line("j1:s2:1:sim-small", tokens_out=201)]
    records = Records(
        settled("j1:s1:1:sim-small", cost() + 2e-9),
        settled("j1:s2:1:sim-small", cost()),
    )
    result = run(lines, records)
    diffs = [(d.call_id, d.kind) for d in result.differences]
    assert diffs == [("j1:s1:1:sim-small", "amount"), ("j1:s2:1:sim-small", "amount")]
    assert result.differences[1].billed_usd == pytest.approx(cost(1000, 201))
    assert result.differences[1].charged_usd == pytest.approx(cost())


def test_a_nano_rounding_is_no_difference() -> None:
    # 1001 tokens at half a nano-USD each: the ledger keeps 500 or 501 nano-USD.
    lines = [line("j1:s1:1:odd", 1001, 0, model="odd")]
    result = run(lines, Records(settled("j1:s1:1:odd", cost(1001, 0, "odd"))))
    assert result.agrees


def test_a_settled_record_of_an_invoiced_job_without_a_line_is_unbilled() -> None:
    lines = [line("j1:s1:1:sim-small")]
    records = Records(
        settled("j1:s1:1:sim-small", cost()),
        settled("j1:s1:1:sim-small:c1", cost(300, 30)),
        # Released and still-held records charged nothing.
        settled("j1:s2:1:sim-small", cost(), state="released"),
        settled("j1:s3:1:sim-small", cost(), state="reserved"),
    )
    result = run(lines, records)
    assert [(d.call_id, d.job_id, d.kind) for d in result.differences] == [
        ("j1:s1:1:sim-small:c1", "j1", "unbilled")
    ]
    d = result.differences[0]
    assert (d.billed_usd, d.charged_usd) == (0.0, pytest.approx(cost(300, 30)))
    assert result.charged_calls == 2
    assert result.charged_usd == pytest.approx(cost() + cost(300, 30))
    assert result.by_job["j1"].charged_usd == pytest.approx(cost() + cost(300, 30))


def test_a_batch_line_is_compared_with_the_sum_of_its_items() -> None:
    items = ["j1:s1:1:sim-small", "j2:s1:1:sim-small", "j2:s2:1:sim-small"]
    total = cost(3000, 600)
    # The worker split the call's tokens by document length; the shares add up.
    shares = [cost(1500, 300), cost(1000, 200), cost(500, 100)]
    records = Records(*(settled(c, s) for c, s in zip(items, shares, strict=True)))
    result = run([line(items, 3000, 600)], records)
    assert result.agrees
    assert (result.billed_calls, result.charged_calls) == (1, 3)
    assert result.billed_usd == pytest.approx(total)
    assert result.charged_usd == pytest.approx(total)
    # The bill is shared out over the items' jobs as the ledger charged them.
    assert result.by_job["j1"].billed_usd == pytest.approx(shares[0])
    assert result.by_job["j2"].billed_usd == pytest.approx(shares[1] + shares[2])
    assert result.by_tenant["acme"].billed_usd == pytest.approx(total)


def test_a_batch_whose_items_do_not_add_up_is_one_amount_difference() -> None:
    items = ["j1:s1:1:sim-small", "j2:s1:1:sim-small"]
    records = Records(settled(items[0], cost(500, 100)), settled(items[1], cost(500, 99)))
    result = run([line(items, 1000, 200)], records)
    (d,) = result.differences
    assert (d.kind, d.call_id, d.job_id) == ("amount", items, ["j1", "j2"])
    assert d.billed_usd == pytest.approx(cost(1000, 200))
    assert d.charged_usd == pytest.approx(cost(500, 100) + cost(500, 99))


def test_a_batch_item_never_charged_is_uncharged_with_what_is_left_of_the_bill() -> None:
    items = ["j1:s1:1:sim-small", "j2:s1:1:sim-small"]
    result = run([line(items, 1000, 200)], Records(settled(items[0], cost(500, 100))))
    (d,) = result.differences
    assert (d.kind, d.call_id, d.job_id) == ("uncharged", items[1], "j2")
    assert d.billed_usd == pytest.approx(cost(1000, 200) - cost(500, 100))


def test_a_call_billed_twice_and_charged_once_differs() -> None:
    lines = [line("j1:s1:1:sim-small"), line("j1:s1:1:sim-small")]
    result = run(lines, Records(settled("j1:s1:1:sim-small", cost())))
    (d,) = result.differences
    assert (d.kind, d.call_id, d.billed_usd) == ("amount", "j1:s1:1:sim-small", 2 * cost())
    assert result.billed_calls == 2 and result.charged_calls == 1


def test_an_empty_invoice_agrees_with_nothing() -> None:
    result = run([], Records(settled("j1:s1:1:sim-small", cost())))
    assert result.agrees and result.billed_calls == result.charged_calls == 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "not JSON"),
        ('{"model": "sim-small"}', "tokens_in"),
        (line("j1:s1", tokens_in=-1), "tokens_in"),
        (line(["a:1", "b:1"], batch=3), "batch of 3"),
        (line("j1:s1", batch=2), "list of call ids"),
        (line("", job_id="j1"), "call id is empty"),
    ],
)
def test_a_bad_line_is_named(text: str, reason: str) -> None:
    with pytest.raises(InvoiceError, match=rf"^line 2: .*{reason}"):
        parse_invoice([line("j1:s1:1:sim-small"), text])


def test_a_line_of_a_model_without_a_price_is_named() -> None:
    lines = parse_invoice(["", line("j1:s1:1:x"), line("j1:s2:1:x", model="mystery")])
    with pytest.raises(InvoiceError, match="line 2: model 'mystery' has no price"):
        reconcile(lines, MODELS, Records())


def test_a_ledger_record_is_read_back_with_its_job_and_tenant() -> None:
    counters = json.dumps(
        [
            ["fl:{spend}:job:j:1", "job:j:1"],
            ["fl:{spend}:w:d:x", "tenant:acme"],
            ["fl:{spend}:w:d:x", "worker_type:extraction"],
            ["fl:{spend}:w:d:x", "fleet"],
        ]
    )
    raw = {
        b"state": b"settled",
        b"usd": b"5000",
        b"tokens": b"12",
        b"actual_usd": b"1500",
        b"actual_tokens": b"10",
        b"counters": counters.encode(),
    }
    record = parse_call_record("j:1:s1:1:m", raw)
    assert record == CallRecord(
        "j:1:s1:1:m", "settled", 5e-6, 12, 1.5e-6, 10, "j:1", "acme", "extraction"
    )
    assert parse_call_record("gone", {}) is None
