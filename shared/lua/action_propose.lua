-- Record the supervisor's review of one draft's actions, once per draft: each action's
-- entry and decision, the action log's entries, and the job's open counts (the draft is
-- closed; approved and waiting actions are open until they end).
-- KEYS: job, audit, actions, review deadlines
-- ARGV: job_id, draft step id, action count, now, actor, keep_s, then per action:
--       action_id, decision, entry_json, review deadline (for needs_review)
-- Returns {1, drafts_open, actions_open} when this call recorded the review, {0,
-- drafts_open, actions_open} when the draft was reviewed already (a redelivery), {-2,
-- status} when the job has ended, {-3} when it is gone.
local job, audit, actions, reviews = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local status = redis.call("HGET", job, "status")
if not status then return {-3} end
local counts = redis.call("HMGET", job, "drafts_open", "actions_open")
if redis.call("HEXISTS", actions, "draft:" .. ARGV[2]) == 1 then
  return {0, tonumber(counts[1] or 0), tonumber(counts[2] or 0)}
end
if status ~= "running" then return {-2, status} end
redis.call("HSET", actions, "draft:" .. ARGV[2], ARGV[3])
local open = 0
local waiting = cjson.decode(redis.call("HGET", job, "waiting_for") or "[]")
for i = 7, #ARGV, 4 do
  local id, decision, entry = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local state = "closed"
  if decision == "approved" then
    state = "pending"
    open = open + 1
  elseif decision == "needs_review" then
    state = "waiting"
    open = open + 1
    redis.call("ZADD", reviews, ARGV[i + 3], ARGV[1] .. " " .. id)
    table.insert(waiting, id)
  end
  redis.call("HSET", actions, id, entry, id .. ":decision", decision, id .. ":state", state,
    id .. ":attempts", 0)
  redis.call("RPUSH", audit, cjson.encode({"actor", ARGV[5], "action", "action_reviewed",
    "action_id", id, "decision", decision, "entry", entry, "at", ARGV[4]}))
end
local version = redis.call("HINCRBY", job, "version", 1)
local drafts = redis.call("HINCRBY", job, "drafts_open", -1)
local acts = redis.call("HINCRBY", job, "actions_open", open)
redis.call("HSET", job, "waiting_for", #waiting > 0 and cjson.encode(waiting) or "[]",
  "updated_at", ARGV[4])
redis.call("EXPIRE", actions, ARGV[6])
return {1, drafts, acts}
