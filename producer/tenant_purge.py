"""`fleetline tenant purge T`: every record of one tenant out of Redis, and a count of each.

Keys do not all name their tenant (a job's keys carry its id, a cache entry its digest), so
the purge reads the keyspace twice with SCAN: the first pass finds the tenant's jobs, the
second deletes whatever belongs to the tenant or to one of those jobs. It refuses to start
while the tenant has work in flight (an unfinished job, or money held for a call): a step
still running would write its outcome and its charge back after the purge.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass
from typing import Any

import redis

from fleetline.producer.api_keys import ApiKeys
from fleetline.shared import keys
from fleetline.shared.batched_reads import READ_BATCH, read_each, scan_names
from fleetline.shared.errors import FleetlineError
from fleetline.shared.schemas import JobStatus

_UNFINISHED = {JobStatus.PENDING.value, JobStatus.RUNNING.value}
# Celery's Redis result backend: one key per task id, and task ids are `<job id>:<step id>`.
_RESULT_PREFIX = "celery-task-meta-"


class TenantBusy(FleetlineError):
    """The tenant still has work in flight; nothing was deleted."""


@dataclass
class PurgeCounts:
    """How many of each kind of record the purge removed."""

    jobs: int = 0
    audit_trails: int = 0
    traces: int = 0
    step_results: int = 0
    cache_entries: int = 0
    spend_records: int = 0
    keys: int = 0
    dead_letters: int = 0
    idempotency_keys: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def purge_tenant(client: redis.Redis, tenant: str) -> PurgeCounts:
    """Delete the tenant's jobs, audit, traces, cache, spend, API keys and dead letters.

    Raises TenantBusy, deleting nothing, while a job of the tenant is unfinished or a call
    of the tenant holds money.
    """
    jobs = _tenant_jobs(client, tenant)
    unfinished = [job_id for job_id, status in jobs.items() if status in _UNFINISHED]
    if unfinished:
        raise TenantBusy(
            f"tenant {tenant!r} has {len(unfinished)} unfinished job(s) "
            f"(e.g. {unfinished[0]}): cancel them or let them end, then purge"
        )
    purge = _Purge(client, tenant, set(jobs))
    calls = purge.call_records()
    if any(state == "reserved" for state in calls.values()):
        raise TenantBusy(
            f"tenant {tenant!r} has money held for a call in flight: purge once it settles"
        )
    purge.run(calls)
    return purge.counts


def _tenant_jobs(client: redis.Redis, tenant: str) -> dict[str, str]:
    """The tenant's job ids, each with its status."""
    job_keys = (k for k in scan_names(client, f"{keys.PREFIX}:job:*", "hash") if k.endswith("}"))
    return {
        _job_id(key): _text(status or b"")
        for key, (owner, status) in read_each(
            client, job_keys, lambda pipe, key: pipe.hmget(key, "tenant", "status")
        )
        if owner is not None and _text(owner) == tenant
    }


def _job_id(key: str) -> str:
    """`fl:job:{<id>}...` -> `<id>`."""
    return key[key.index("{") + 1 : key.index("}")]


class _Purge:
    """The second pass: everything of one tenant and its jobs."""

    def __init__(self, client: redis.Redis, tenant: str, jobs: set[str]) -> None:
        self._r = client
        self._tenant = tenant
        self._jobs = jobs
        self._scope = f"tenant:{tenant}"
        self.counts = PurgeCounts(jobs=len(jobs))

    def call_records(self) -> dict[str, str]:
        """The tenant's ledger call records, each with its state (reserved | settled ...)."""
        records: dict[str, str] = {}
        found = read_each(
            self._r,
            scan_names(self._r, keys.spend_call("*"), "hash"),
            lambda pipe, key: pipe.hmget(key, "state", "counters"),
        )
        for key, (state, counters) in found:
            scopes = {scope for _, scope in json.loads(_text(counters or b"[]"))}
            if self._scope in scopes:
                records[key] = _text(state or b"")
        return records

    def run(self, calls: dict[str, str]) -> None:
        self._delete(list(calls), "spend_records")
        if calls:
            self._r.zrem(keys.spend_holds(), *calls)
        self._job_keys()
        self._spend()
        self._idempotency()
        self._cache()
        self._api_keys()
        self._dead_letters()
        self._delete(list(scan_names(self._r, keys.tenant_slots(self._tenant))), "")

    def _job_keys(self) -> None:
        owned: list[str] = []
        for key in scan_names(self._r, f"{keys.PREFIX}:job:*"):
            if _job_id(key) not in self._jobs:
                continue
            owned.append(key)
            if key.endswith((":trail", ":audit")):  # a trail, or one written as a stream
                self.counts.audit_trails += 1
            elif key.endswith(":trace"):
                self.counts.traces += 1
        results = [
            key
            for key in scan_names(self._r, f"{_RESULT_PREFIX}*")
            if key[len(_RESULT_PREFIX) :].split(":", 1)[0] in self._jobs
        ]
        self.counts.step_results += len(results)
        self._delete(owned + results, "")
        if self._jobs:
            self._r.zrem(keys.deadlines(), *self._jobs)
            # A callback still owed for a purged job has nothing left to send.
            self._r.zrem(keys.callbacks_due(), *self._jobs)
            self._r.hdel(keys.callback_attempts(), *self._jobs)
        self._delete([keys.spend_job(job_id) for job_id in self._jobs], "spend_records")

    def _spend(self) -> None:
        """The tenant's counters in every hour and day window (and its jobs', which a
        window written before jobs left them may hold), and its tripped kill switches
        (their expiry was the reset; the tenant is gone)."""
        prefixes = (f"{self._scope}|", *(f"job:{job_id}|" for job_id in self._jobs))
        for window in scan_names(self._r, f"{keys.PREFIX}:{{spend}}:[hd]:*", "hash"):
            fields = [f for f in map(_text, self._r.hkeys(window)) if f.startswith(prefixes)]
            if fields:
                self._r.hdel(window, *fields)
                self.counts.spend_records += len({f.rsplit("|", 1)[0] for f in fields})
        switches = list(scan_names(self._r, keys.kill_switch(self._scope, "*")))
        if switches:
            self._r.zrem(keys.kill_index(), *switches)
        self._delete(switches, "spend_records")

    def _idempotency(self) -> None:
        self._delete(
            list(scan_names(self._r, keys.idempotency(self._tenant, "*"))), "idempotency_keys"
        )

    def _cache(self) -> None:
        """Entries the tenant's calls made (an entry names whose call made it)."""
        owned: list[str] = []
        entries = scan_names(self._r, keys.cache_entry("*"), "string")
        for key, raw in read_each(self._r, entries, lambda pipe, key: pipe.get(key)):
            try:
                entry = json.loads(raw) if raw is not None else {}
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("tenant") == self._tenant:
                owned.append(key)
        self._delete(owned, "cache_entries")

    def _api_keys(self) -> None:
        store = ApiKeys(self._r)
        for record in store.list():
            if record.tenant == self._tenant:
                store.revoke(record.key_id)
                self._r.delete(keys.api_bucket(record.key_id))
                self.counts.keys += 1

    def _dead_letters(self) -> None:
        stream = keys.dead_letters()
        doomed = [
            _text(entry_id)
            for entry_id, fields in self._r.xrange(stream) or []
            if self._names_tenant(fields or {})
        ]
        if doomed:
            self.counts.dead_letters += int(self._r.xdel(stream, *doomed))

    def _names_tenant(self, fields: dict[Any, Any]) -> bool:
        task_id = _text(fields.get(b"task_id") or fields.get("task_id") or b"")
        if task_id.split(":", 1)[0] in self._jobs:
            return True
        try:
            message = json.loads(_text(fields.get(b"message") or fields.get("message") or b"{}"))
        except ValueError:
            return False
        return _mentions_tenant(message, self._tenant) or _mentions_tenant(
            _body(message), self._tenant
        )

    def _delete(self, names: list[str], counter: str) -> None:
        for start in range(0, len(names), READ_BATCH):
            removed = int(self._r.delete(*names[start : start + READ_BATCH]))
            if counter:
                setattr(self.counts, counter, getattr(self.counts, counter) + removed)


def _mentions_tenant(value: Any, tenant: str, depth: int = 0) -> bool:
    """Whether a decoded task message carries `"tenant": tenant` in a payload it holds."""
    if depth > 4:
        return False
    if isinstance(value, dict):
        if value.get("tenant") == tenant:
            return True
        return any(_mentions_tenant(v, tenant, depth + 1) for v in value.values())
    if isinstance(value, list):
        return any(_mentions_tenant(v, tenant, depth + 1) for v in value)
    return False


def _body(message: Any) -> Any:
    """A raw dead letter's body (`body_b64`), decoded when it is JSON."""
    if not isinstance(message, dict) or not message.get("body_b64"):
        return None
    try:
        return json.loads(base64.b64decode(message["body_b64"]))
    except ValueError:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
