-- Turn a call's reservation into spend, once: a second settle of the call changes nothing.
-- A hold that expired (already given back) is still charged: the money was spent. A call
-- that cost more than its hold is charged in full, and the excess counted as overrun_usd
-- (spend then stands past the hold, so the scope's next reservations see it). A record
-- that is gone (its TTL passed) is not charged: nothing can be charged twice. A record with
-- a job's counter is deleted here (the counter keeps the charge, and answers after).
-- KEYS: call, holds
-- ARGV: actual_usd, actual_tokens, now, saved_tiering_usd (nano-USD, "0" for none),
--       call field (the call id's field in its job's counter), the job counters' key prefix
-- Returns {1, previous state} when charged now, {0, state} when the call was already
-- settled or released, {-1, "unknown"} when there is no such call record.
local call, holds = KEYS[1], KEYS[2]
local rec = redis.call("HMGET", call, "state", "usd", "tokens", "counters", "keys", "job",
  "keep", "holds")
if not rec[1] then
  local kept = kept_state(ARGV[5], ARGV[6])
  if kept then return {0, kept} end
  return {-1, "unknown"}
end
if rec[1] ~= "reserved" and rec[1] ~= "expired" then return {0, rec[1]} end
local counters = held(rec[5], rec[4])
local live = {}
if rec[1] == "reserved" then
  unhold(holding(rec[5], rec[8], rec[4]), rec[2], rec[3], live)
  rate_adjust(call, tonumber(ARGV[2]) - tonumber(rec[3]))
else
  rate_adjust(call, tonumber(ARGV[2]))  -- the sweep gave the hold's tokens back
end
local overrun = tonumber(ARGV[1]) - tonumber(rec[2])
for _, c in ipairs(counters) do
  if exists(live, c[1]) then
    redis.call("HINCRBY", c[1], c[2] .. "|spent_usd", ARGV[1])
    redis.call("HINCRBY", c[1], c[2] .. "|spent_tokens", ARGV[2])
    redis.call("HINCRBY", c[1], c[2] .. "|calls", 1)
    if overrun > 0 then redis.call("HINCRBY", c[1], c[2] .. "|overrun_usd", overrun) end
    if ARGV[4] ~= "0" then
      redis.call("HINCRBY", c[1], c[2] .. "|saved_tiering_usd", ARGV[4])
    end
  end
end
local job = job_counter(rec[5], rec[6])
if job then
  redis.call("HSET", job, ARGV[5], ARGV[1] .. "," .. ARGV[2])
  if rec[7] then keep_at_least(job, rec[7]) end
end
if job and counter_answers(job, ARGV[5], ARGV[6]) then
  redis.call("DEL", call)
else
  redis.call("HSET", call, "state", "settled", "actual_usd", ARGV[1], "actual_tokens", ARGV[2])
  -- What only a reserved record needs goes: the record lives on smaller until its TTL.
  redis.call("HDEL", call, "delivery", "keep", "rate", "holds")
end
redis.call("ZREM", holds, call)
return {1, rec[1]}
