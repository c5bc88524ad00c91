-- Give a call's reservation back (the call failed before costing anything), once.
-- A record with a job's counter is deleted here (the counter answers after).
-- KEYS: call, holds
-- ARGV: call field (the call id's field in its job's counter), the job counters' key prefix
-- Returns {1, previous state} when released now, {0, state} when already settled or
-- released, {-1, "unknown"} when there is no such call record.
local call, holds = KEYS[1], KEYS[2]
local rec = redis.call("HMGET", call, "state", "usd", "tokens", "counters", "keys", "job",
  "holds")
if not rec[1] then
  local kept = kept_state(ARGV[1], ARGV[2])
  if kept then return {0, kept} end
  return {-1, "unknown"}
end
if rec[1] ~= "reserved" and rec[1] ~= "expired" then return {0, rec[1]} end
if rec[1] == "reserved" then
  unhold(holding(rec[5], rec[7], rec[4]), rec[2], rec[3])
  -- Its tokens go back; its request stays counted: a failed call was sent all the same.
  rate_adjust(call, -tonumber(rec[3]))
end
local job = job_counter(rec[5], rec[6])
if job then redis.call("HSET", job, ARGV[1], "-") end
if job and counter_answers(job, ARGV[1], ARGV[2]) then
  redis.call("DEL", call)
else
  redis.call("HSET", call, "state", "released")
  redis.call("HDEL", call, "delivery", "keep", "rate", "holds")
end
redis.call("ZREM", holds, call)
return {1, rec[1]}
