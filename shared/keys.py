"""Every Redis key Fleetline writes, and every TTL, in one place.

Keys of one job share the `{job_id}` hash tag so that one Lua script may touch them all,
on a single Redis or a cluster.
"""

from __future__ import annotations

import math

PREFIX = "fl"

# Jobs still pending or running keep their keys at least this long past their deadline,
# so that a job nobody finalises (every worker gone) still ages out.
UNFINISHED_GRACE_TTL_S = 86_400
# An idempotency key lives exactly as long as the job it points at.


def job(job_id: str) -> str:
    """HASH: the job record (status, version, spec, result, cost, ...)."""
    return f"{PREFIX}:job:{{{job_id}}}"


def job_audit(job_id: str) -> str:
    """LIST: one entry per state change of the job, oldest first, each a JSON array of
    field, value pairs. A list, not a stream: Redis allocates every stream's first node
    4 KB ahead, more than a whole job's trail takes."""
    return f"{PREFIX}:job:{{{job_id}}}:trail"


def job_audit_stream(job_id: str) -> str:
    """STREAM: a job's audit trail as Fleetline wrote it before job_audit (read, never
    written: it goes with its job's TTL)."""
    return f"{PREFIX}:job:{{{job_id}}}:audit"


def job_outcomes(job_id: str) -> str:
    """HASH: subtask id -> SubtaskOutcome JSON; HSETNX makes recording idempotent."""
    return f"{PREFIX}:job:{{{job_id}}}:outcomes"


def job_trace(job_id: str) -> str:
    """HASH: span id -> one compact span of the job's trace (shared/trace_store.py), at
    most `FLEETLINE_TRACE_MAX_SPANS` of them; span ids as fields make a write run again
    after a lost reply change nothing. TTL: that of the job record, renewed by each write
    (a running job's: to its deadline plus the finished-job TTL, as finalising will set)."""
    return f"{PREFIX}:job:{{{job_id}}}:trace"


# A pipeline's checkpoints and a debate's rounds must outlive their job record, which
# finalising gives the finished-job TTL after their last write (at most a deadline later):
# each write sets theirs to that TTL plus this much.
PATTERN_KEEP_EXTRA_S = 86_400


def job_checkpoints(job_id: str) -> str:
    """HASH: a pipeline's checkpoints: the step id of a stage in a run -> the output it
    checkpointed (JSON); a resume reads the one before the stage it starts from. TTL:
    finished-job TTL plus PATTERN_KEEP_EXTRA_S from each write (a resume only lengthens
    it)."""
    return f"{PREFIX}:job:{{{job_id}}}:checkpoints"


def job_rounds(job_id: str) -> str:
    """HASH: a debate's turns: `r<round>:<agent index>` -> 1 answered / 0 did not, and per
    round `:done`, `:ok` (counts), `:in` (who answered before it closed), `:closed`,
    `:closer` (the turn that closed it). TTL as job_checkpoints."""
    return f"{PREFIX}:job:{{{job_id}}}:rounds"


def job_actions(job_id: str) -> str:
    """HASH: a supervised job's action log and side-effect ledger: `<action id>` -> the
    reviewed action (JSON, written once), `<action id>:<field>` -> its decision, state
    (waiting, pending, started, done, failed, closed), reviewer, attempts, result; and
    `draft:<step id>` once a draft's actions were reviewed. TTL as job_checkpoints."""
    return f"{PREFIX}:job:{{{job_id}}}:actions"


def review_deadlines() -> str:
    """ZSET: `<job id> <action id>` of every action waiting for a reviewer, scored by when
    its review times out; every worker's watchdog rejects the overdue ones. Members leave
    when decided; no TTL (it is the fleet's own, and empty when nothing waits)."""
    return f"{PREFIX}:review_deadlines"


def attempt_charged(job_id: str, subtask_id: str, attempt: int) -> str:
    """STRING: set once a retried attempt's charges were added to its job's cost (so the
    closing trip run again after a lost reply adds nothing); TTL closing_once_ttl_s."""
    return f"{PREFIX}:job:{{{job_id}}}:charged:{subtask_id}:{attempt}"


def idempotency(tenant: str, key: str) -> str:
    """STRING: the job id an idempotency key already created."""
    return f"{PREFIX}:idem:{tenant}:{key}"


def deadlines() -> str:
    """ZSET: job id scored by its deadline; the watchdog finalises overdue members."""
    return f"{PREFIX}:deadlines"


# A delivery that died mid-run leaves its in-flight mark behind; the mark outlives any
# redelivery (visibility timeout plus restore scan), then goes by itself.
INFLIGHT_TTL_S = 2 * 3600


def inflight(job_id: str, subtask_id: str) -> str:
    """SET: the deliveries of a subtask that started and have not finished, one member
    each (crash counter)."""
    return f"{PREFIX}:job:{{{job_id}}}:inflight:{subtask_id}"


# A step's closing round trip may run again after Redis failed before its reply came
# (through_outage): the writes in it that count (a breaker's result, a cache saving) leave
# a once-marker per delivery so that they count once. A marker must outlive every retry of
# that trip (for outage_grace_s from the first try) and then go soon: a busy fleet writes one
# or two a call. CLOSING_ONCE_MARGIN_S covers the trip's own time and clock differences.
CLOSING_ONCE_MARGIN_S = 60


def closing_once_ttl_s(outage_grace_s: float) -> int:
    """The once-markers' TTL for a fleet whose closing trips retry for `outage_grace_s`."""
    return math.ceil(outage_grace_s) + CLOSING_ONCE_MARGIN_S


# With the default outage grace (30 s): for clients built without the fleet's settings.
CLOSING_ONCE_TTL_S = closing_once_ttl_s(30.0)


def api_key(sha256: str) -> str:
    """HASH: one API key's record (key_id, tenant, name, created_at), by the key's SHA-256;
    the key itself is never stored."""
    return f"{PREFIX}:apikey:{sha256}"


def api_key_index() -> str:
    """HASH: key_id -> SHA-256 of every API key, for listing and revoking."""
    return f"{PREFIX}:apikeys"


def tenant_slots(tenant: str) -> str:
    """ZSET: delivery -> when its slot lapses; the tenant's steps in flight (fair share)."""
    return f"{PREFIX}:fair:{tenant}"


def api_bucket(key_id: str) -> str:
    """HASH (tokens, at): one API key's request bucket (FLEETLINE_API_RATE_PER_S / _BURST)."""
    return f"{PREFIX}:apirate:{key_id}"


def watchdog_turn() -> str:
    """STRING (PX: just under the reaper interval): the worker that runs the deadline
    watchdog this interval holds it; everyone else skips theirs."""
    return f"{PREFIX}:watchdog:turn"


def dead_letters() -> str:
    """STREAM: messages that could not be run (capped by settings.celery.dead_letter_max)."""
    return f"{PREFIX}:dlq"


# --- Job callbacks (workers/callbacks.py) ---------------------------------------------------
# Both callback keys carry the `{callbacks}` hash tag: the claim script moves a delivery's
# due time and counts its attempt at once. Neither has a TTL: an entry leaves when its
# callback is delivered, abandoned or refused, or when its job is found gone. Each failed
# attempt keeps the job's keys alive CALLBACK_KEEP_S past the next one, so a short job TTL
# never drops a delivery still owed, and its audit can be read after the last attempt.
CALLBACK_KEEP_S = 3_600


def callbacks_due() -> str:
    """ZSET: job id -> when its callback's next attempt is due; a claimed one is moved
    ahead by the attempt's lease, so no two workers POST it at once."""
    return f"{PREFIX}:{{callbacks}}:due"


def callback_attempts() -> str:
    """HASH: job id -> attempts of its callback claimed so far (the attempt number)."""
    return f"{PREFIX}:{{callbacks}}:attempts"


# --- Spend ledger (shared/ledger.py) --------------------------------------------------------
# Every ledger key carries the `{spend}` hash tag: one script moves a call's money across the
# job, tenant, worker-type and fleet counters at once, so they must share a slot on a cluster.

# A reservation a worker never settled nor released (it crashed) is given back after this
# long. It must outlast the longest model call: the default hard time limit is 75 s and
# Celery redelivers nothing faster than its visibility timeout, so 15 min is ample; callers
# with longer calls pass their own hold. A settle after the hold lapsed still charges.
SPEND_HOLD_TTL_S = 900
# Window counters live this long past the end of their UTC hour/day: a call reserved in
# the window's last second settles into it (must exceed SPEND_HOLD_TTL_S), and the report
# and the kill-switch beat can still read the window that just closed.
SPEND_WINDOW_GRACE_S = 3_600
# A call record (spend_call) makes settle/release once, and a redelivery's reservation of
# the same call id a duplicate. It lives as long as a redelivery or a late settle of the call
# may still come, from the reservation (workers/spend.py `hold_for` derives it from the
# settings): the Celery visibility timeout plus kombu's restore scan (a delivery that died
# is redelivered within them), plus the call's hold (the longest it may run: the sweep must
# still find the record to give the hold back), plus the Redis outage grace (its closing
# trip may be retried that long), plus SPEND_CALL_MARGIN_S (clocks, queue wait). 300 + 10 +
# 90 + 30 + 60 = 490 s with the default settings. Past that the job's own counter still
# names the call (spend_job: its `call|<id>` field), so a later reservation of the id stays
# a duplicate and a late settle finds no record and charges nothing: never twice. The record
# of a call reserved for a job goes sooner, at its settlement or release: from then on the
# job's counter answers for it (reserve, settle and release all read it), so settled calls
# cost no record at all.
SPEND_CALL_MARGIN_S = 60
# What a caller that gives only a hold's seconds (not the settings) gets on top of its hold:
# the default visibility timeout (300 s), restore scan (10 s), outage grace (30 s) and margin.
SPEND_CALL_DEFAULT_EXTRA_S = 300 + 10 + 30 + SPEND_CALL_MARGIN_S
# The record of a call held for the default SPEND_HOLD_TTL_S by such a caller.
SPEND_CALL_TTL_S = SPEND_HOLD_TTL_S + SPEND_CALL_DEFAULT_EXTRA_S
# A job's lifetime counter must outlive the job record: each reservation keeps it at least
# to the job's deadline (its budget must hold while it can still reserve) and at least the
# finished-job TTL (FLEETLINE_LIMITS_FINISHED_TTL_S), and each settlement at least that TTL
# again (a job's last settle comes just before it is finalised, and finalising gives the
# record that TTL), plus SPEND_JOB_MARGIN_S: finalising comes a trip or two after the last
# settlement. Writes never shorten it. A caller that does not say (a saving of a job that
# reserved nothing, a debate round) gives a counter without a TTL this one.
SPEND_JOB_TTL_S = 2 * 86_400
SPEND_JOB_MARGIN_S = 60


def spend_window(window_code: str, bucket: str) -> str:
    """HASH: `<scope>|<metric>` -> integer, for one UTC hour (`h`, 2026112522) or day (`d`).

    Scopes: fleet, tenant:X, worker_type:Y, model:M (a job counts in spend_job only);
    metrics: spent_usd (nano-USD), spent_tokens, calls, saved_cache_usd, saved_tiering_usd,
    overrun_usd, and reserved_usd and reserved_tokens where a limit reads them and for the
    fleet. TTL: to the window's end plus SPEND_WINDOW_GRACE_S.
    """
    return f"{PREFIX}:{{spend}}:{window_code}:{bucket}"


def spend_job(job_id: str) -> str:
    """HASH: the job's lifetime counters (`job:<id>|<metric>`), its tenant (`tenant`), and
    one field per call id reserved for it (spend_job_call: `r` reserved, `-` released,
    `<nano-USD>,<tokens>` once settled: what reconcile reads once the call record is gone).
    TTL: at least to the job's deadline and the finished-job TTL (SPEND_JOB_TTL_S's note)."""
    return f"{PREFIX}:{{spend}}:job:{job_id}"


def spend_job_call(call_id: str) -> str:
    """The field of spend_job that names one of the job's call ids."""
    return f"call|{call_id}"


def spend_call(call_id: str) -> str:
    """HASH: one model call's reservation record: state, usd, tokens, delivery, keys (JSON
    list of the counter keys it holds), counters (JSON [[key indexes, scope], ...]: each
    scope once, with the keys it is counted in), job (the index of the job's counter),
    keep (the job counter's TTL floor at settlement), rate (its rate window, when limited)
    and, once settled, actual_usd and actual_tokens (delivery, keep and rate then go: only
    a reservation in flight needs them); a record with a job's counter is deleted when
    settled or released instead (the counter keeps what it held). TTL: from the reservation, see the
    SPEND_CALL_MARGIN_S note (the hold's seconds plus SPEND_CALL_DEFAULT_EXTRA_S when the
    caller gives no settings)."""
    return f"{PREFIX}:{{spend}}:call:{call_id}"


def spend_holds() -> str:
    """ZSET: call record keys scored by when their hold expires; swept by the scripts."""
    return f"{PREFIX}:{{spend}}:holds"


def rate_window(group: str, minute: int) -> str:
    """HASH: one API key's calendar minute (`unix_time // 60`): `requests`, `tokens` held
    and used by the calls reserved in it (shared/rate_limits.py). In the `{spend}` slot:
    the reservation script holds it with the call's money. TTL: the minute plus one."""
    return f"{PREFIX}:{{spend}}:rate:{group}:{minute}"


def spend_saving_once(once: str, kind: str) -> str:
    """STRING: set when the saving `kind` (cache | tiering) of one delivery (`once`) was
    counted, so that counting it again changes nothing; TTL closing_once_ttl_s."""
    return f"{PREFIX}:{{spend}}:saving:{once}:{kind}"


# --- Kill switches (shared/killswitch.py) ---------------------------------------------------
# A switch's TTL runs to the end of its UTC hour/day: the expiry IS the automatic reset.
# The `{kill}` hash tag lets one MGET read every switch that applies to a call.
# The index outlives the longest window (a day); it is pruned by score on every read.
KILL_INDEX_TTL_S = 2 * 86_400


def kill_switch(scope: str, window_code: str) -> str:
    """STRING: JSON of a tripped switch (scope fleet | tenant:X | worker_type:Y, window h|d)."""
    return f"{PREFIX}:{{kill}}:{window_code}:{scope}"


def kill_index() -> str:
    """ZSET: tripped switch keys scored by their reset time, for status()."""
    return f"{PREFIX}:{{kill}}:tripped"


# --- Result cache (shared/cache.py) ---------------------------------------------------------
# Entry TTLs are per worker type (the caller's settings). A lease lasts as long as the
# caller's provider call may take: if its holder dies, the lease expires and a waiter
# takes over. Entry and lease share the digest as hash tag, so one script sees both.


def cache_entry(digest: str) -> str:
    """STRING: JSON {output, cost_usd, model, tenant, stored_at} of a validated model result."""
    return f"{PREFIX}:cache:{{{digest}}}"


def cache_lease(digest: str) -> str:
    """STRING: the single-flight lease token of whoever is computing the entry (SET NX PX)."""
    return f"{PREFIX}:cache:{{{digest}}}:lease"


# --- Circuit breakers (shared/breakers/) ----------------------------------------------------
# One breaker per (worker type, model), named `<worker_type>:<model>`. Every breaker key
# carries the `{breaker}` hash tag: one script moves a breaker's state, its window, its probe
# lease and the registry at once, so they must share a slot on a cluster.

# A breaker's state lives this long past its last write, then goes by itself: a breaker
# nobody called for a day has nothing worth keeping (an open one would long since have
# reached half-open). It must exceed any reset timeout plus probe timeout.
BREAKER_IDLE_TTL_S = 86_400
# The window hash lives one window (plus a bucket) past its last write: older buckets no
# longer count. The probe lease lives as long as a probe call may take (the caller's
# setting): if its holder dies, the lease expires and the next caller probes.


def breaker(name: str) -> str:
    """HASH: a breaker's state (closed | open), opened_at, half_open_at (ms), trips."""
    return f"{PREFIX}:{{breaker}}:{name}"


def breaker_window(name: str) -> str:
    """HASH: a ring of per-bucket counters: t<i> bucket number, c<i> calls, f<i> failures."""
    return f"{PREFIX}:{{breaker}}:{name}:window"


def breaker_probe(name: str) -> str:
    """STRING: the token of the one half-open probe call in flight (SET NX PX)."""
    return f"{PREFIX}:{{breaker}}:{name}:probe"


def breaker_result_once(name: str, once: str) -> str:
    """STRING: the reply of the result one delivery (`once`) recorded on breaker `name`, so
    that recording it again replays that reply and counts nothing; TTL closing_once_ttl_s."""
    return f"{PREFIX}:{{breaker}}:{name}:once:{once}"


def breaker_registry() -> str:
    """ZSET: breaker name scored by its last write (ms), for listing; TTL BREAKER_IDLE_TTL_S."""
    return f"{PREFIX}:{{breaker}}:names"


# --- Kill-switch enforcement and scheduled runs (beat/) ----------------------------------
# The enforcement record has no TTL on purpose: it is the only memory of which queues the
# beat paused, and a queue paused before a long beat outage must still be resumed by the
# first check after it. It is one small hash, rewritten by every check.
# A scheduled run's progress stays readable as long as its jobs do (finished jobs: 7 days).
SCHEDULED_RUN_TTL_S = 7 * 86_400
# A schedule's audit stream keeps this many run summaries (a nightly run: almost three years).
SCHEDULE_AUDIT_MAXLEN = 1_000


def kill_enforcement() -> str:
    """HASH: paused (JSON queue -> scopes pausing it), checks (count), last_check_at."""
    return f"{PREFIX}:{{kill}}:enforcement"


def fan_in_queues() -> str:
    """SET: the queues fan-outs' then-steps run on, where jobs are finalised; a kill switch
    never pauses them. No TTL: one member per agent that closes a fan-out, added by
    producers on first use."""
    return f"{PREFIX}:fan_in_queues"


def scheduled_run(name: str, run_id: str) -> str:
    """HASH: one scheduled run's progress (status, counts, job ids); TTL SCHEDULED_RUN_TTL_S."""
    return f"{PREFIX}:schedule:{name}:run:{run_id}"


def schedule_audit(name: str) -> str:
    """STREAM: one summary per finished run of the schedule, capped at SCHEDULE_AUDIT_MAXLEN."""
    return f"{PREFIX}:schedule:{name}:audit"
