"""The CLI's plumbing: reading spec files, mapping errors to exit codes, waiting on a job."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from fleetline.producer.cli_local import embedded_redis_url, with_redis_url
from fleetline.producer.cli_render import err, error
from fleetline.shared.errors import (
    ConfigError,
    FleetlineError,
    JobNotFound,
    KillSwitchTripped,
    NotResumable,
    SpecError,
    StoreUnavailable,
)
from fleetline.shared.json_limits import check_text
from fleetline.shared.redis_client import make_redis
from fleetline.shared.schemas import JobResult, JobStatus
from fleetline.shared.settings import (
    FleetlineSettings,
    LimitsSettings,
    load_settings,
)
from fleetline.shared.state import StateStore

# How often --wait reads the job record; never AsyncResult.get(), which grows
# super-linearly with the size of a chord.
POLL_S = 0.2
# Without --timeout, --wait gives the watchdog this long past the job's deadline.
WAIT_GRACE_S = 30.0


AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        "-A",
        metavar="MODULE:ATTR",
        help="The fleet (default: FLEETLINE_APP, else the example fleet).",
        show_default=False,
    ),
]


def cli_settings(app_ref: str | None, *, find_redis: bool = True) -> FleetlineSettings:
    """A command's settings, bound to its fleet.

    Without FLEETLINE_REDIS_URL, and with `find_redis`, they point at the embedded Redis
    that a `fleetline up` in this directory started.
    """
    settings = load_settings(app_ref)
    if find_redis and settings.redis.url is None:
        url = embedded_redis_url(settings)
        if url is not None:
            settings = with_redis_url(settings, url)
    return settings


class Exit(IntEnum):
    """The CLI's exit codes (README: "Exit codes")."""

    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    KILLED = 3
    NO_REDIS = 4


def exit_code(status: JobStatus) -> Exit:
    """0 while a job runs or when it succeeded or degraded; 1 for any other end."""
    if not status.terminal or status in (JobStatus.SUCCEEDED, JobStatus.DEGRADED):
        return Exit.OK
    return Exit.FAILED


@contextmanager
def exit_codes() -> Iterator[None]:
    """Turn Fleetline's exceptions into a message on stderr and the matching exit code."""
    try:
        yield
    except (SpecError, ConfigError) as exc:
        error(str(exc))
        raise typer.Exit(Exit.BAD_INPUT) from None
    except (JobNotFound, NotResumable) as exc:
        error(str(exc))
        raise typer.Exit(Exit.BAD_INPUT) from None
    except KillSwitchTripped as exc:
        error(f"refused: {exc}")
        raise typer.Exit(Exit.KILLED) from None
    except (StoreUnavailable, RedisConnectionError, RedisTimeoutError, OperationalError) as exc:
        reason = str(exc) if isinstance(exc, StoreUnavailable) else f"Redis unavailable: {exc}"
        error(f"{reason} (is the server up, and FLEETLINE_REDIS_URL right?)")
        raise typer.Exit(Exit.NO_REDIS) from None
    except FleetlineError as exc:
        error(str(exc))
        raise typer.Exit(Exit.FAILED) from None


def read_spec(source: str, limits: LimitsSettings) -> Any:
    """The JSON in a spec file (`-`: stdin), or a SpecError saying why it cannot be read.

    The text is checked against the edge limits before it is parsed: its size, its
    nesting, and numbers JSON cannot round-trip.
    """
    name = "stdin" if source == "-" else source
    # One character more than the limit's bytes is enough to know the text is too big.
    most = limits.max_input_bytes + 1
    try:
        if source == "-":
            text = sys.stdin.read(most)
        else:
            with Path(source).open(encoding="utf-8") as f:
                text = f.read(most)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SpecError([("spec", f"cannot read {name}: {reason}")]) from None
    if len(text) == most:
        raise SpecError([("spec", f"{name} is over the limit of {limits.max_input_bytes} bytes")])
    return check_text(text, limits.max_json_depth, limits.max_input_bytes, name=name)


def open_store(settings: FleetlineSettings) -> StateStore:
    """The state store, with commands bounded like submit's (a dead Redis fails fast)."""
    client = make_redis(settings, timeout_s=settings.redis.submit_timeout_s)
    return StateStore(client, settings.limits.finished_ttl_s)


def watch(
    store: StateStore, job_id: str, subtasks: int, timeout_s: float | None = None
) -> JobResult | None:
    """Show a progress bar until the job is terminal; None if `timeout_s` passes first.

    Args:
        store: where the job record lives.
        job_id: the job to follow.
        subtasks: how many parallel subtasks it has (synthesis counts as one more).
        timeout_s: give up after this long; None: the job's deadline plus a grace.
    """
    total = subtasks + 1
    job = store.get(job_id)
    if timeout_s is None:
        timeout_s = max(0.0, job.deadline_at - time.time()) + WAIT_GRACE_S
    give_up = time.monotonic() + timeout_s
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("subtasks"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err) as progress:
        bar = progress.add_task(job.status.value, total=total)
        status, done = job.status, len(job.subtasks)
        while True:
            progress.update(bar, completed=min(done, total), description=status.value)
            if status.terminal:
                return store.get(job_id)
            if time.monotonic() >= give_up:
                return None
            time.sleep(POLL_S)
            # Status and a count only: a job of thousands of subtasks stays cheap to watch.
            status, done = store.progress(job_id)
