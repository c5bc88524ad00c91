"""Provider rate limits, fleet-wide: a burst from several worker processes against a TPM.

The provider is `rate_server`: an OpenAI-compatible server that enforces tokens per
calendar minute with its own tokenizer and answers 429 with Retry-After past the limit.
Two worker processes (32 threads each) serve the agent, so only a limit kept in Redis,
shared by every process, can keep the burst under the provider's.

Without a limit set the burst meets 429s. With `tpm` set on the model, the fleet reserves
each call's upper bound in the current minute before sending it, so the provider never
refuses one: what does not fit waits for the next minute, or, when its deadline ends
first, ends `timed_out` (`rate_limit`) without calling.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from fleetline.producer.supervisor import worker_command
from fleetline.shared.models.base import ModelRequest, render_messages
from fleetline.shared.models.prices import input_token_bound
from fleetline.shared.schemas import JobResult, OutcomeStatus, SubtaskOutcome
from tests.integration.conftest import FleetFactory, RunningFleet
from tests.integration.rate_fleet import MAX_OUTPUT_TOKENS, MODEL, fleet_env, tagger
from tests.integration.rate_server import (
    RateServer,
    RateServerFactory,
    prompt_tokens,
    rate_servers,
    seconds_left_in_window,
    window_of,
)

pytestmark = pytest.mark.integration

__all__ = ["rate_servers"]  # the fixture, imported for the tests below

# With these texts a call's upper bound is ~2650 tokens and its usage on the server ~2170
# (the server fills its output to max_tokens): the fleet's limit admits 4 or 5 calls a
# minute, the server serves at most 5 (both are checked in `_sizes`).
TPM = 12_000
BURST = 16
# The last jobs of the burst, whose deadline reaches into the next minute.
LONG = 4
# The burst's steps must be done in this (and the first minute must outlast it).
SHORT_STEP_S = 4.0
# The long jobs' steps end this long into the next minute.
LONG_STEP_PAST_WINDOW_S = 8.0
# Time left in the minute before a burst is sent, or it waits for the next minute.
CLEAR_S_NO_LIMIT = 8.0
CLEAR_S_LIMITED = 12.0
SERVER = {"latency_s": 0.2, "fill_output": True}


@pytest.fixture
def second_worker() -> Iterator[Callable[[RunningFleet], None]]:
    """A second worker process for the tagger's queue (the fleet starts one per agent)."""
    started: list[subprocess.Popen[bytes]] = []

    def start(fleet: RunningFleet) -> None:
        # wait_ready knows a worker by its node name up to the last "-": "tagger-b".
        command = worker_command(fleet.settings, ["tagger"], f"tagger-b-{os.getpid()}")
        with (fleet.log_dir / "tagger-b.log").open("ab") as out:
            started.append(
                subprocess.Popen(
                    command,
                    env=fleet.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        fleet.wait_ready(["tagger", "tagger-b"])

    yield start
    for process in started:
        process.terminate()
    for process in started:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _start(
    start_fleet: FleetFactory,
    second_worker: Callable[[RunningFleet], None],
    server: RateServer,
    **env: str,
) -> RunningFleet:
    fleet = start_fleet(with_beat=False, **fleet_env(server.url), **env)
    second_worker(fleet)
    return fleet


def _text(nonce: str, n: int) -> str:
    """Job n's text; every text of a burst has the same length (so every call's size)."""
    return f"{_marker(nonce, n)}: Acme Corp reported revenue of $4.2 million in 2023."


def _marker(nonce: str, n: int) -> str:
    return f"Item {n:02d} of burst {nonce}"


def _sizes(text: str) -> tuple[int, int]:
    """A call's upper bound as the fleet reserves it, and its usage on the server."""
    request = ModelRequest(
        model=MODEL,
        api_model=MODEL,
        worker_type=tagger.name,
        instruction=tagger.instruction(""),
        document=text,
        max_output_tokens=MAX_OUTPUT_TOKENS,
        timeout_s=1,
    )
    system, user = render_messages(request)
    bound = input_token_bound(system, user) + MAX_OUTPUT_TOKENS
    usage = prompt_tokens([{"content": system}, {"content": user}]) + MAX_OUTPUT_TOKENS
    return bound, usage


def _clear_of_window_end(seconds: float) -> None:
    """Until at least `seconds` remain in the current minute."""
    left = seconds_left_in_window()
    if left < seconds:
        time.sleep(left + 0.2)


def _step_deadline_s(fleet: RunningFleet, step_s: float) -> float:
    """The job deadline whose steps' share is `step_s`."""
    profile = fleet.settings.latency_profiles[fleet.settings.default_latency_profile]
    return step_s / profile.workers_share()


def _submit(fleet: RunningFleet, text: str, deadline_s: float) -> str:
    spec = {"kind": "tag", "input": {"text": text}, "deadline_s": deadline_s}
    return fleet.producer.submit(spec).job_id


def _tag_step(job: JobResult) -> SubtaskOutcome:
    return next(o for o in job.subtasks if o.subtask_id == "tag")


def _describe(steps: list[SubtaskOutcome]) -> str:
    seen: dict[str, int] = {}
    for step in steps:
        key = f"{step.status.value}/{step.error.category if step.error else '-'}"
        seen[key] = seen.get(key, 0) + 1
    return ", ".join(f"{n} {key}" for key, n in sorted(seen.items()))


def test_a_burst_without_the_limiter_meets_many_429s(
    start_fleet: FleetFactory,
    second_worker: Callable[[RunningFleet], None],
    rate_servers: RateServerFactory,
) -> None:
    server = rate_servers(TPM, **SERVER)
    # The breaker would stop calls once enough 429s came back; this test counts what a
    # burst sends the provider, so it stays closed.
    fleet = _start(start_fleet, second_worker, server, FLEETLINE_BREAKER_MIN_CALLS="1000")
    nonce = uuid.uuid4().hex[:8]
    _, usage = _sizes(_text(nonce, 0))
    _clear_of_window_end(CLEAR_S_NO_LIMIT)
    deadline_s = _step_deadline_s(fleet, SHORT_STEP_S)
    ids = [_submit(fleet, _text(nonce, n), deadline_s) for n in range(BURST)]
    jobs = [fleet.wait(job_id, timeout_s=30) for job_id in ids]
    steps = [_tag_step(job) for job in jobs]
    print(f"{server.summary()}; steps: {_describe(steps)}")  # shown with -rP

    assert server.rejected >= 5, f"{server.summary()}; steps: {_describe(steps)}"
    for window in server.windows.values():
        assert window.answered <= TPM // usage, server.summary()
    # Each 429 ended its step: its Retry-After (the minute's end) fell past the deadline.
    limited = [s for s in steps if s.error is not None and s.error.category == "rate_limited"]
    ok = [s for s in steps if s.status is OutcomeStatus.OK]
    assert len(limited) + len(ok) == BURST, _describe(steps)
    assert len(limited) == server.rejected, f"{server.summary()}; steps: {_describe(steps)}"
    assert len(ok) == server.answered
    assert all(s.status is OutcomeStatus.FAILED for s in limited)


def test_the_fleet_wide_limiter_sends_no_call_into_a_429(
    start_fleet: FleetFactory,
    second_worker: Callable[[RunningFleet], None],
    rate_servers: RateServerFactory,
) -> None:
    server = rate_servers(TPM, **SERVER)
    nonce = uuid.uuid4().hex[:8]
    bound, usage = _sizes(_text(nonce, 0))
    # The harness's premise: the limit holds the long jobs in one minute by their bound,
    # and the server serves only part of the burst in one.
    assert TPM // bound >= LONG and TPM // usage < BURST - LONG, (bound, usage)
    # The whole price row: a model named in the environment replaces the built-in row
    # (settings merge rows, not their fields), so TPM alone would drop provider and prices.
    row = "FLEETLINE_MODELS__GPT-4O-MINI__"
    fleet = _start(
        start_fleet,
        second_worker,
        server,
        **{
            f"{row}PROVIDER": "openai",
            f"{row}INPUT_USD_PER_MTOK": "0.15",
            f"{row}OUTPUT_USD_PER_MTOK": "0.60",
            f"{row}TPM": str(TPM),
        },
    )
    assert fleet.settings.models[MODEL].provider == "openai"

    _clear_of_window_end(CLEAR_S_LIMITED)
    started = time.time()
    first = window_of(started)
    left = seconds_left_in_window(started)
    short_s = _step_deadline_s(fleet, SHORT_STEP_S)
    long_s = _step_deadline_s(fleet, left + LONG_STEP_PAST_WINDOW_S)
    # The long jobs go last: the short ones take the first minute, the long ones wait.
    deadlines = [short_s] * (BURST - LONG) + [long_s] * LONG
    ids = [_submit(fleet, _text(nonce, n), d) for n, d in enumerate(deadlines)]
    jobs = [fleet.wait(job_id, timeout_s=left + 30) for job_id in ids]
    steps = [_tag_step(job) for job in jobs]
    print(f"{server.summary()}; steps: {_describe(steps)}")  # shown with -rP

    assert server.rejected == 0, (
        f"the provider refused calls: {server.summary()}; steps: {_describe(steps)}"
    )
    assert all(job.status.terminal for job in jobs)
    received = server.received
    capacity = TPM // min(r.usage for r in received)
    for number, window in server.windows.items():
        assert window.tokens <= TPM and window.answered <= capacity, (number, server.summary())

    # The minute each job's call was answered in (every request was answered, see above).
    served_in = {n: r.window for n in range(BURST) for r in received if _marker(nonce, n) in r.text}
    refused = []
    for n, step in enumerate(steps[: BURST - LONG]):
        if step.status is OutcomeStatus.OK:
            assert served_in.get(n) == first, (n, served_in)
            continue
        assert step.status is OutcomeStatus.TIMED_OUT, (n, step)
        assert step.error is not None and step.error.category == "rate_limit", (n, step)
        assert not server.saw(_marker(nonce, n)), f"job {n} was refused after it called"
        refused.append(n)
    assert len(refused) >= BURST - LONG - capacity, (refused, server.summary())

    for n, step in enumerate(steps[BURST - LONG :], start=BURST - LONG):
        assert step.status is OutcomeStatus.OK, (n, step, server.summary())
    waited = [n for n, w in served_in.items() if w == first + 1]
    assert waited, f"no long job waited for the next minute: {server.summary()}"
    assert set(waited) <= set(range(BURST - LONG, BURST)), waited
    assert server.answered == sum(s.status is OutcomeStatus.OK for s in steps) == len(received)
