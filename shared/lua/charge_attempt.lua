-- Add what a retried attempt's calls cost to its job's cost, once: the attempt recorded no
-- outcome (the next one will), but its calls were charged in the ledger all the same.
-- KEYS: job, audit, once
-- ARGV: cost_usd, subtask_id, attempt, actor, now, once_ttl_s
-- Returns 1 when added now, 0 when already added or the job is gone.
local job, audit, once = KEYS[1], KEYS[2], KEYS[3]
if redis.call("EXISTS", job) == 0 then return 0 end
if not redis.call("SET", once, "1", "NX", "EX", ARGV[6]) then return 0 end
local version = redis.call("HINCRBY", job, "version", 1)
redis.call("HINCRBYFLOAT", job, "cost_usd", ARGV[1])
redis.call("RPUSH", audit, cjson.encode({
  "actor", ARGV[4], "action", "attempt_charged", "version", version,
  "subtask", ARGV[2], "attempt", ARGV[3], "cost_usd", ARGV[1], "at", ARGV[5]}))
return 1
