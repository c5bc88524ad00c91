"""Bad input mixed into a live fleet: poison messages, foreign wire formats, fuzzed specs.

Whatever arrives, the fleet runs what it may, dead-letters the rest with a reason, and
refuses a bad spec naming the field, with nothing written to Redis.
"""

from __future__ import annotations

import copy
import json
import math
import os
import pickle
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fleetline.producer.cli import app as cli
from fleetline.shared import keys
from fleetline.shared.celery_app import priority_lists
from fleetline.shared.deadletters import DeadLetterStore
from fleetline.shared.embedded_redis import free_port
from fleetline.shared.errors import SpecError
from ops.bench.harness import patched_environ
from ops.chaos.checks import Account, account
from ops.chaos.harness import ChaosFleet, JobStream, Submitted, research_spec
from ops.chaos.run import Run
from ops.chaos.scenarios_kill import short_visibility

FLEETLINE = str(Path(sys.executable).with_name("fleetline"))
POISON = "CHAOS-POISON-PILL"


def _letters(fleet: ChaosFleet) -> DeadLetterStore:
    return DeadLetterStore(fleet.producer.store.client, 100_000)


def _wait_letters(store: DeadLetterStore, at_least: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while store.count() < at_least and time.monotonic() < deadline:
        time.sleep(0.5)


def poison(run: Run) -> Account:
    """Garbage items, unknown tasks, wrong arguments and a step that kills its process,
    mixed into a stream of good jobs."""
    fleet = run.fleet(
        "poison",
        FLEETLINE_SIM_CRASH_MARKER=POISON,
        FLEETLINE_SIM_CRASH_TYPES="extraction",
        **short_visibility(),
    )
    client = fleet.producer.store.client
    app = fleet.producer.app
    stream = JobStream(fleet.producer).start(run.rate, run.fault_s)
    time.sleep(2)
    client.lpush("extraction", b"\xff\xfe not json at all", b'{"not": "an envelope"}')
    app.send_task("no_such_task", queue="extraction")
    app.send_task("extraction", args=(1, 2, 3), queue="extraction")
    spec = research_spec(10_000, deadline_s=120)
    spec["input"]["documents"][0]["text"] += f" {POISON}"
    pill = fleet.producer.submit(spec)
    stream.join()
    letters = _letters(fleet)
    _wait_letters(letters, 5, timeout_s=150)
    jobs = [*stream.jobs, _submitted(pill.job_id, spec)]
    out = account(fleet, run.client(fleet), jobs)
    reasons = sorted({d.reason for d in letters.list(1000)})
    expected = {"not_json", "not_an_envelope", "unknown_task", "invalid_task", "poison"}
    out.passed = out.passed and expected <= set(reasons)
    out.notes.append(f"dead letters: {letters.count()} ({', '.join(reasons)})")
    return out


def _submitted(job_id: str, spec: dict[str, Any]) -> Submitted:
    return Submitted(job_id, time.time(), time.time() + float(spec["deadline_s"]))


class _Evil:
    """Unpickled, it would leave a file behind: proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def wire(run: Run) -> Account:
    """Pickle, YAML, msgpack and malformed JSON envelopes pushed to every queue: none runs,
    each is dead-lettered."""
    fleet = run.fleet("wire")
    marker = run.workdir / "wire-executed"
    bodies = [
        (pickle.dumps(_Evil(marker)), "application/x-python-serialize"),
        (f"!!python/object/apply:os.system ['touch {marker}']".encode(), "application/x-yaml"),
        (b"\x93\x01\x02\x03", "application/x-msgpack"),
        (b'[[{"job_id": ', "application/json"),
    ]
    stream = JobStream(fleet.producer).start(run.rate, run.fault_s / 2)
    queues = sorted(fleet.worker_types)
    with fleet.producer.app.connection_for_write() as connection:
        producer = connection.Producer()
        for queue in queues:
            for body, content_type in bodies:
                producer.publish(
                    body,
                    routing_key=queue,
                    exchange="",
                    content_type=content_type,
                    content_encoding="binary",
                    headers={"task": queue, "id": uuid.uuid4().hex, "lang": "py"},
                    serializer=None,
                )
    pushed = len(queues) * len(bodies)
    stream.join()
    letters = _letters(fleet)
    _wait_letters(letters, pushed)
    out = account(fleet, run.client(fleet), stream.jobs)
    out.passed = out.passed and letters.count() >= pushed and not marker.exists()
    out.notes.append(
        f"{pushed} foreign envelopes, {letters.count()} dead letters, executed: {marker.exists()}"
    )
    return out


# --- fuzz_specs -----------------------------------------------------------------------------

_ids = st.from_regex(r"[A-Za-z0-9_.-]{1,16}", fullmatch=True)
_words = st.text(st.characters(codec="utf-8", categories=["L", "N", "Zs"]), min_size=3, max_size=80)
_documents = st.lists(
    st.fixed_dictionaries({"id": _ids, "text": _words.filter(str.strip)}),
    min_size=1,
    max_size=5,
    unique_by=lambda d: d["id"],
)
_valid = st.fixed_dictionaries(
    {
        "kind": st.just("research_brief"),
        "input": st.fixed_dictionaries(
            {"question": _words.filter(lambda q: len(q.strip()) >= 3), "documents": _documents}
        ),
    },
    optional={
        "tenant": _ids,
        "budget_usd": st.floats(0.01, 100),
        "max_tokens": st.integers(1_000, 1_000_000),
        # Past the whole run: the watchdog reaps none of them while the fuzzing counts jobs.
        "deadline_s": st.floats(900, 1800),
        "priority": st.integers(0, 9),
    },
)
_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_BAD_VALUES: dict[str, list[Any]] = {
    "kind": ["", "Research", "no_such_kind", 7, None],
    "budget_usd": [0, -1, 1e9, math.nan, math.inf, "1"],
    "max_tokens": [0, -5, 10**12, 1.5],
    "deadline_s": [0, -1, 1e9, math.inf],
    "priority": [-1, 10, "high"],
    "tenant": ["", "a b", "x" * 65],
    "latency_profile": ["no_such_profile"],
}


@st.composite
def _invalid(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = copy.deepcopy(draw(_valid))
    how = draw(st.sampled_from(["drop", "value", "extra", "input", "deep", "huge"]))
    spec["_mutation"] = how  # taken off before the submit; names the case in a problem
    if how == "drop":
        spec.pop(draw(st.sampled_from(["kind", "input"])))
    elif how == "value":
        field = draw(st.sampled_from(sorted(_BAD_VALUES)))
        spec[field] = draw(st.sampled_from(_BAD_VALUES[field]))
        spec["_mutation"] = f"value:{field}"
    elif how == "extra":
        spec[draw(st.sampled_from(["tenantt", "inputs", "x"]))] = draw(_junk)
    elif how == "input":
        spec["input"] = draw(
            _junk.filter(lambda v: not isinstance(v, dict) or "documents" not in v)
        )
    elif how == "deep":
        nested: Any = "bottom"
        for _ in range(100):
            nested = {"n": nested}
        spec["input"] = {**spec["input"], "extra": nested}
    else:
        # One character past the example's document limit (200,000).
        spec["input"]["documents"][0]["text"] = "x" * 200_001
    return spec


def fuzz_specs(run: Run) -> Account:
    """Specs from hypothesis, valid and not, through the Python API, the CLI (in process and
    as subprocesses) and the HTTP API: each bad one refused naming a field, nothing written;
    each good one accepted."""
    fleet = run.fleet("fuzz_specs", worker_types=["synthesis"], with_beat=False)
    client = fleet.producer.store.client
    queues = sorted(fleet.settings.fleet.worker_types)
    problems: list[str] = []
    counts = {"valid": 0, "invalid": 0}

    @settings(
        max_examples=run.scaled(10_000, 1_500),
        database=None,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.tuples(st.just(True), _valid) | st.tuples(st.just(False), _invalid()))
    def through_python(case: tuple[bool, dict[str, Any]]) -> None:
        valid, spec = case
        spec = dict(spec)
        mutation = spec.pop("_mutation", "")
        counts["valid" if valid else "invalid"] += 1
        before = _written(client, queues)
        try:
            fleet.producer.submit(spec)
        except SpecError as exc:
            if valid:
                problems.append(f"valid spec refused: {exc.errors}")
            elif not exc.errors or not all(field for field, _ in exc.errors):
                problems.append(f"refused without naming a field: {exc}")
            elif _grew(before, _written(client, queues)):
                problems.append(f"a refused spec wrote to Redis: {exc.errors}")
        except Exception as exc:
            problems.append(f"{'valid' if valid else 'invalid'} spec raised {exc!r}")
        else:
            if not valid:
                problems.append(f"invalid spec ({mutation}) accepted: {_short(spec)}")

    through_python()
    cli_checked = _through_cli(fleet, run.scaled(300, 60), run.scaled(40, 8), problems)
    http_checked = _through_http(fleet, run.scaled(300, 60), problems)
    out = Account(jobs=counts["valid"], terminal=counts["valid"])
    out.passed = not problems
    out.notes.append(
        f"python: {counts['valid']} valid, {counts['invalid']} invalid; cli: {cli_checked}; "
        f"http: {http_checked}; "
        f"problems: {len(problems)}"
    )
    out.notes.extend(problems[:20])
    return out


def _through_cli(fleet: ChaosFleet, in_process: int, subprocesses: int, problems: list[str]) -> int:
    samples: list[tuple[bool, dict[str, Any]]] = []

    @settings(max_examples=in_process, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.tuples(st.just(True), _valid) | st.tuples(st.just(False), _invalid()))
    def collect(case: tuple[bool, dict[str, Any]]) -> None:
        valid, spec = case
        samples.append((valid, {k: v for k, v in spec.items() if k != "_mutation"}))

    collect()
    runner = CliRunner()
    env = {**fleet.env, "FLEETLINE_REDIS_URL": fleet.direct_url}
    with patched_environ(env):
        for valid, spec in samples:
            # NaN and Infinity as JavaScript spells them: JSON without them, refused.
            text = json.dumps(spec)
            done = runner.invoke(cli, ["submit", "-", "--json"], input=text)
            _check_cli(valid, done.exit_code, done.stderr, problems)
    for valid, spec in samples[:subprocesses]:
        done_p = subprocess.run(
            [FLEETLINE, "submit", "-"],
            input=json.dumps(spec),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        _check_cli(valid, done_p.returncode, done_p.stderr, problems)
    return len(samples) + min(subprocesses, len(samples))


def _written(client: redis.Redis, queues: list[str]) -> tuple[int, int]:
    """What a submit writes, however little: every job it creates joins the deadline set,
    and every step it enqueues a queue (a worker's own keys come and go meanwhile, so
    DBSIZE would not tell)."""
    pipe = client.pipeline(transaction=False)
    pipe.zcard(keys.deadlines())
    for queue in queues:
        for name in priority_lists(queue):
            pipe.llen(name)
    jobs, *lengths = pipe.execute()
    return int(jobs), sum(int(n) for n in lengths)


def _grew(before: tuple[int, int], after: tuple[int, int]) -> bool:
    """Whether a job or a queued step was added (the fleet's own housekeeping takes jobs
    off the deadline set meanwhile, never adds one)."""
    return any(b < a for b, a in zip(before, after, strict=True))


def _samples(count: int) -> list[tuple[bool, dict[str, Any]]]:
    found: list[tuple[bool, dict[str, Any]]] = []

    @settings(max_examples=count, database=None, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(st.tuples(st.just(True), _valid) | st.tuples(st.just(False), _invalid()))
    def collect(case: tuple[bool, dict[str, Any]]) -> None:
        valid, spec = case
        if spec.get("_mutation") == "value:tenant":
            return  # over HTTP the key names the tenant: without its bad one, it is valid
        found.append((valid, {k: v for k, v in spec.items() if k not in ("_mutation", "tenant")}))

    collect()
    return found


def _through_http(fleet: ChaosFleet, count: int, problems: list[str]) -> int:
    """A sample through a live `fleetline serve` (a spec there names no tenant)."""
    env = {**fleet.env, "FLEETLINE_REDIS_URL": fleet.direct_url, "FLEETLINE_API_RATE_PER_S": "1000"}
    key = subprocess.run(
        [FLEETLINE, "keys", "create", "--tenant", "fuzz"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout.strip()  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [FLEETLINE, "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    samples = _samples(count)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            _wait_http(http, server)
            auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            for valid, spec in samples:
                answer = http.post("/v1/jobs", content=json.dumps(spec), headers=auth)
                if valid and answer.status_code != 202:
                    problems.append(
                        f"http {answer.status_code} for a valid spec: {answer.text[:200]}"
                    )
                elif not valid and (
                    answer.status_code not in (413, 422) or "field" not in answer.text
                ):
                    problems.append(
                        f"http {answer.status_code} for an invalid spec: {answer.text[:200]}"
                    )
    finally:
        server.terminate()
        server.wait(timeout=10)
    return len(samples)


def _wait_http(http: httpx.Client, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if http.get("/v1/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("fleetline serve did not start")


def _check_cli(valid: bool, code: int, stderr: str, problems: list[str]) -> None:
    if valid and code != 0:
        problems.append(f"cli refused a valid spec ({code}): {stderr[-300:]}")
    if not valid and code != 2:
        problems.append(f"cli exit {code} for an invalid spec: {stderr[-300:]}")


def _short(spec: dict[str, Any]) -> str:
    return json.dumps(spec, default=str)[:300]
