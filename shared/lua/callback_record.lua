-- Record one attempt of a job's callback in the job's audit, and what comes of it.
-- KEYS: job, audit, outcomes, due, attempts
-- ARGV: job_id, attempt, outcome (retry | delivered | abandoned | refused), fields_json
--       (the attempt's audit fields), retry_at, keep_s, actor, now
-- Returns 1 when recorded; 0 when a later claim holds the callback (only this attempt's
-- entry is written: the later one decides what comes next); -1 when the job is gone (its
-- callback is dropped: there is nothing left to send).
local job, audit, outcomes, due, attempts = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local job_id, attempt, outcome = ARGV[1], ARGV[2], ARGV[3]
local actor, now = ARGV[7], ARGV[8]
local version = redis.call("HGET", job, "version")
if not version then
  redis.call("ZREM", due, job_id)
  redis.call("HDEL", attempts, job_id)
  return -1
end
local flat = {}
for k, v in pairs(cjson.decode(ARGV[4])) do flat[#flat + 1] = k; flat[#flat + 1] = v end
local action = outcome == "refused" and "callback_refused" or "callback_attempt"
redis.call("RPUSH", audit, cjson.encode({"actor", actor, "action", action, "version", version,
  "attempt", attempt, "at", now, unpack(flat)}))
if redis.call("HGET", attempts, job_id) ~= attempt then return 0 end
if outcome == "retry" then
  redis.call("ZADD", due, ARGV[5], job_id)
  -- The job's keys outlive the next attempt, whatever their own TTL was.
  local keep = math.ceil(tonumber(ARGV[5]) - tonumber(now) + tonumber(ARGV[6]))
  for _, key in ipairs({job, audit, outcomes}) do
    local ttl = redis.call("TTL", key)
    if ttl >= 0 and ttl < keep then redis.call("EXPIRE", key, keep) end
  end
  return 1
end
redis.call("ZREM", due, job_id)
redis.call("HDEL", attempts, job_id)
if outcome ~= "refused" then
  redis.call("RPUSH", audit, cjson.encode({"actor", actor, "action", "callback_" .. outcome,
    "version", version, "attempts", attempt, "at", now}))
end
return 1
