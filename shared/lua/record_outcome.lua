-- Record a subtask's outcome once: a redelivered subtask changes nothing the second time.
-- KEYS: job, audit, outcomes
-- ARGV: subtask_id, outcome_json, cost_usd, status, actor, now
-- Returns {1, version} when recorded now, {0, 0} when it was already recorded, {-1, 0}
-- when the job no longer exists (expired): nothing is written then.
local job, audit, outcomes = KEYS[1], KEYS[2], KEYS[3]
local ttl = redis.call("TTL", job)
if ttl == -2 then return {-1, 0} end
if redis.call("HSETNX", outcomes, ARGV[1], ARGV[2]) == 0 then return {0, 0} end
-- A job finalised early (deadline) keeps its status, but late outcomes are still kept
-- and charged: the money was spent.
if ttl > 0 then redis.call("EXPIRE", outcomes, ttl) end
local version = redis.call("HINCRBY", job, "version", 1)
redis.call("HINCRBYFLOAT", job, "cost_usd", ARGV[3])
redis.call("XADD", audit, "*", "actor", ARGV[5], "action", "subtask_recorded", "version", version,
  "subtask", ARGV[1], "status", ARGV[4], "cost_usd", ARGV[3], "at", ARGV[6])
return {1, version}
