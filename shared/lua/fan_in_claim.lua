-- A fan-in starts: claim the job's join for this send of its message and read the outcomes.
-- A second send of the fan-in (a redelivered header sent it again) finds another claim and
-- runs nothing; a redelivery of the same send holds the same claim and runs again.
-- KEYS: job, outcomes
-- ARGV: claim (one per send of the message)
-- Returns {1, subtask_ids_json, outcome_json...} when this send holds the claim, {0} when
-- another send does, {-1} when the job no longer exists.
local job, outcomes = KEYS[1], KEYS[2]
local f = redis.call("HMGET", job, "fan_in_claim", "subtask_ids")
if not f[2] then return {-1} end
if not f[1] then
  redis.call("HSET", job, "fan_in_claim", ARGV[1])
elseif f[1] ~= ARGV[1] then
  return {0}
end
local reply = redis.call("HVALS", outcomes)
table.insert(reply, 1, f[2])
table.insert(reply, 1, 1)
return reply
