"""What every job's trace must be, whatever its shape: one tree rooted at its submit, a span
for each recorded step, and call costs that add up to the job's."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import pytest

from fleetline.shared import otel
from fleetline.shared.schemas import JobResult
from fleetline.shared.trace_store import load_trace
from tests.integration.conftest import RunningFleet


def children_of(spans: list[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    found: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
    for s in spans:
        found[s["parent_id"]].append(s)
    return found


def subtree(span: dict[str, Any], children: dict[str | None, list[dict[str, Any]]]) -> list[Any]:
    below = [span]
    for child in children.get(span["span_id"], []):
        below += subtree(child, children)
    return below


def assert_one_tree(fleet: RunningFleet, job: JobResult) -> list[dict[str, Any]]:
    """The job's spans, once every recorded step has one: one tree under `submit <kind>`,
    whose calls' costs are the job's cost."""
    recorded = {o.subtask_id for o in job.subtasks}
    deadline = time.monotonic() + 10
    while True:
        found = load_trace(fleet.store.client, job.job_id)
        spans = found["spans"] if found else []
        traced = {s["attributes"].get(otel.STEP_ID) for s in spans}
        if recorded <= traced or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert recorded <= traced, f"steps without a span: {recorded - traced}"
    roots = [s for s in spans if s["parent_id"] is None]
    assert [r["name"] for r in roots] == [f"submit {job.kind}"]
    assert len(subtree(roots[0], children_of(spans))) == len(spans), "every span reaches it"
    cost = sum(s["attributes"].get(otel.COST, 0.0) for s in spans)
    assert cost == pytest.approx(job.cost_usd, abs=1e-9)
    return spans
