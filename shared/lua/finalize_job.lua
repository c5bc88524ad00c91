-- Finalise a job exactly once: only from a non-terminal status; later calls change nothing.
-- A job with a callback_url is put in the callbacks' due set: its result is POSTed now.
-- KEYS: job, audit, outcomes, deadlines, callbacks due
-- ARGV: job_id, status, completeness, result_json, extra_cost, actor, now, ttl_s, reason,
--       run (optional: a pipeline stage's run; the job must still be in it)
-- Returns {1, version, status, kind, created_at, now, reason} when this call finalised the
-- job (what the job metrics need), {0, status} otherwise.
local job, audit, outcomes, deadlines, callbacks = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local status = redis.call("HGET", job, "status")
if not status then return {0, "missing"} end
if status ~= "pending" and status ~= "running" then return {0, status} end
-- A stage of an earlier run never ends the run a resume started after it.
if ARGV[10] and ARGV[10] ~= "" and redis.call("HGET", job, "run") ~= ARGV[10] then
  return {0, "another run"}
end
local version = redis.call("HINCRBY", job, "version", 1)
redis.call("HINCRBYFLOAT", job, "cost_usd", ARGV[5])
redis.call("HSET", job, "status", ARGV[2], "completeness", ARGV[3], "result", ARGV[4],
  "finished_at", ARGV[7], "updated_at", ARGV[7])
-- A fan-out's join message is sent only while the job runs: a final job keeps none of it.
redis.call("HDEL", job, "fan_in")
redis.call("RPUSH", audit, cjson.encode({
  "actor", ARGV[6], "action", "finalised", "version", version,
  "status", ARGV[2], "completeness", ARGV[3], "reason", ARGV[9], "at", ARGV[7]}))
redis.call("ZREM", deadlines, ARGV[1])
local ttl = tonumber(ARGV[8])
redis.call("EXPIRE", job, ttl)
redis.call("EXPIRE", audit, ttl)
redis.call("EXPIRE", outcomes, ttl)
local idem = redis.call("HGET", job, "idem_key")
if idem and idem ~= "" then redis.call("EXPIRE", idem, ttl) end
local callback = redis.call("HGET", job, "callback_url")
if callback and callback ~= "" then redis.call("ZADD", callbacks, ARGV[7], ARGV[1]) end
return {1, version, ARGV[2], redis.call("HGET", job, "kind") or "",
  redis.call("HGET", job, "created_at") or ARGV[7], ARGV[7], ARGV[9]}
