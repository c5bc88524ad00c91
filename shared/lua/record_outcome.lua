-- Record a subtask's outcome once: a redelivered subtask changes nothing the second time.
-- It is also a fan-out's join: the record that completes a running job's set of outcomes
-- claims its fan-in, and the reply tells that worker to send it.
-- KEYS: job, audit, outcomes
-- ARGV: subtask_id, outcome_json, cost_usd, status, actor, now
-- Returns {1, version, fan_in} when recorded now, {0, 0, fan_in} when it was already
-- recorded, {-1, 0, ""} when the job no longer exists (expired): nothing is written then.
-- fan_in is the job's fan-in message (JSON) when this worker is to send it, else "".
local job, audit, outcomes = KEYS[1], KEYS[2], KEYS[3]
local ttl = redis.call("TTL", job)
if ttl == -2 then return {-1, 0, ""} end

-- The join: every header's outcome is in and the job still runs. The subtask that
-- completed it holds the claim; its redelivery (it died before its fan-in was sent, or
-- before its ack) sends it again unless a fan-in already started: that one stands.
local function fan_in_due(first)
  local f = redis.call("HMGET", job, "fan_in", "expected", "status", "fan_in_by", "fan_in_claim")
  if not f[1] or not f[2] or f[3] ~= "running" or f[5] then return "" end
  if redis.call("HLEN", outcomes) < tonumber(f[2]) then return "" end
  if f[4] then return f[4] == ARGV[1] and not first and f[1] or "" end
  redis.call("HSET", job, "fan_in_by", ARGV[1])
  return f[1]
end

if redis.call("HSETNX", outcomes, ARGV[1], ARGV[2]) == 0 then return {0, 0, fan_in_due(false)} end
-- A job finalised early (deadline) keeps its status, but late outcomes are still kept
-- and charged: the money was spent.
if ttl > 0 then redis.call("EXPIRE", outcomes, ttl) end
local version = redis.call("HINCRBY", job, "version", 1)
redis.call("HINCRBYFLOAT", job, "cost_usd", ARGV[3])
redis.call("RPUSH", audit, cjson.encode({
  "actor", ARGV[5], "action", "subtask_recorded", "version", version,
  "subtask", ARGV[1], "status", ARGV[4], "cost_usd", ARGV[3], "at", ARGV[6]}))
return {1, version, fan_in_due(true)}
