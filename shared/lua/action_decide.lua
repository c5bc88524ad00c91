-- A reviewer's decision (or the review timeout's) on an action waiting for review, once:
-- approved actions become pending (their tool step is sent next), rejected ones close.
-- KEYS: job, audit, actions, review deadlines
-- ARGV: job_id, action_id, decision (approved | rejected), reviewer, reason, now, keep_s
-- Returns {1, decision, drafts_open, actions_open} when this call decided, {0, decision,
-- state, drafts_open, actions_open} when the action was not waiting (decided already),
-- {-2, status} when the job has ended, {-3} when the job is gone, {-4} when the job has
-- no such action.
local job, audit, actions, reviews = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id = ARGV[2]
local status = redis.call("HGET", job, "status")
if not status then return {-3} end
if redis.call("HEXISTS", actions, id) == 0 then return {-4} end
local counts = redis.call("HMGET", job, "drafts_open", "actions_open")
local current = redis.call("HMGET", actions, id .. ":decision", id .. ":state")
if current[1] ~= "needs_review" then
  return {0, current[1], current[2], tonumber(counts[1] or 0), tonumber(counts[2] or 0)}
end
if status ~= "running" then return {-2, status} end
local state, acts = "pending", tonumber(counts[2] or 0)
if ARGV[3] ~= "approved" then
  state = "closed"
  acts = redis.call("HINCRBY", job, "actions_open", -1)
end
redis.call("HSET", actions, id .. ":decision", ARGV[3], id .. ":state", state,
  id .. ":reviewer", ARGV[4], id .. ":reason", ARGV[5], id .. ":reviewed_at", ARGV[6])
redis.call("ZREM", reviews, ARGV[1] .. " " .. id)
local waiting = cjson.decode(redis.call("HGET", job, "waiting_for") or "[]")
local left = {}
for _, other in ipairs(waiting) do
  if other ~= id then table.insert(left, other) end
end
local version = redis.call("HINCRBY", job, "version", 1)
redis.call("HSET", job, "waiting_for", #left > 0 and cjson.encode(left) or "[]",
  "updated_at", ARGV[6])
redis.call("RPUSH", audit, cjson.encode({"actor", ARGV[4], "action", "action_" .. ARGV[3],
  "version", version, "action_id", id, "reason", ARGV[5], "at", ARGV[6]}))
redis.call("EXPIRE", actions, ARGV[7])
return {1, ARGV[3], tonumber(counts[1] or 0), acts}
